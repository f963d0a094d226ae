"""HuBERT (Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov & Mohamed 2021, "HuBERT: Self-Supervised Speech
Representation Learning by Masked Prediction of Hidden Units").

Predicts: the k-means cluster of every masked frame (spans of CNN features replaced by a learned mask vector)
with cross-entropy over cosine similarities between a projection of the last layer and learned cluster
embeddings, / 0.1 (eq. 4); unmasked frames add their loss with weight alpha (`unmasked_weight`, the paper's
0). Targets, fitted with scikit-learn's MiniBatchKMeans and assigned to the 50 frames/s output:

* iteration 1: MFCCs with deltas (39 values per 10 ms) of the training clips, every second frame (offset one
  frame, so a 20 ms output frame meets the MFCC frame nearest its centre);
* iteration 2+: a layer (`target_layer`) of a frozen model: a teacher run (`teacher: PATH`, an exported
  HuBERT/wav2vec2 folder) from the start, or, with `recluster_every: N`, a copy of this model taken every N
  steps (its label embeddings restart, since the cluster ids mean new things).

The projection and the cluster embeddings are dropped after pretraining.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.speech import encode_clips, load_speech_encoder
from selfsup.config import bounded
from selfsup.data.audio_features import mfcc
from selfsup.diagnostics import codebook_health
from selfsup.errors import SelfsupError
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.objectives.speech_quantizers import add_mask_embedding, export_encoder, frame_span_mask, nearest_centroid
from selfsup.registry import register_objective


def deltas_appended(features: np.ndarray, width: int = 2) -> np.ndarray:
    """Features with their first and second HTK deltas (regression slope over +-width frames, edges repeated):
    scipy's Savitzky-Golay slope, which is that formula (`audio_features.with_deltas` slices with float indices)."""
    from scipy.signal import savgol_filter

    def delta(x: np.ndarray) -> np.ndarray:
        return savgol_filter(x, 2 * width + 1, 1, deriv=1, axis=0, mode="nearest")

    d1 = delta(features)
    return np.concatenate([features, d1, delta(d1)], axis=1).astype(np.float32)


def mfcc_frames(clip: np.ndarray, spec, n_out: int) -> np.ndarray:
    """(n_out, 39) MFCC + deltas of a waveform, aligned to the 20 ms output frames (frame 2t + 1 of 10 ms)."""
    feats = deltas_appended(mfcc(clip, spec))[1::2][:n_out]
    if len(feats) < n_out:
        feats = np.concatenate([feats, np.repeat(feats[-1:], n_out - len(feats), axis=0)])
    return feats


def fit_kmeans(frames: np.ndarray, clusters: int, seed: int, max_frames: int) -> np.ndarray:
    """(clusters, D) MiniBatchKMeans centroids of at most max_frames rows (a seeded sample)."""
    from sklearn.cluster import MiniBatchKMeans

    if len(frames) < clusters:
        raise SelfsupError(f"objective.num_clusters: {clusters} clusters from only {len(frames)} frames")
    if len(frames) > max_frames:
        frames = frames[np.sort(np.random.default_rng(seed).choice(len(frames), max_frames, replace=False))]
    km = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=1, batch_size=2048, max_iter=100)
    return km.fit(frames.astype(np.float32)).cluster_centers_.astype(np.float32)


@register_objective("hubert")
class Hubert(SpeechObjective):
    inputs = ("waveform",)
    default_backbone = "hubert"

    @dataclasses.dataclass
    class Options:
        mask_prob: float = bounded(0.8, gt=0, lt=1, doc="span_mask's mask_prob (the paper's 8% x span 10)")
        mask_span: int = bounded(5, gt=0, doc="frames per masked span (20 ms each; the paper's 10)")
        num_clusters: int = bounded(50, gt=1, doc="k-means clusters (the paper's 100, then 500)")
        target_layer: int = bounded(2, ge=0, doc="iteration 2+: the layer clustered (0 = CNN projection)")
        recluster_every: int = bounded(0, ge=0, doc="re-fit targets on this model's layer every N steps; 0 = never")
        teacher: str | None = None  # an exported HuBERT/wav2vec2 folder whose target_layer gives the targets
        unmasked_weight: float = bounded(0.0, ge=0, doc="alpha: weight of the loss on unmasked frames")
        embedding_dim: int = bounded(64, gt=0, doc="projection and cluster embedding size (the paper's 256)")
        logit_temperature: float = bounded(0.1, gt=0)
        cluster_clips: int = bounded(1000, gt=0, doc="training clips whose frames k-means is fitted on")
        cluster_frames: int = bounded(100_000, gt=0, doc="at most this many frames per k-means fit")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        o = recipe.objective
        if o.teacher and o.recluster_every:
            raise SelfsupError("objective.teacher: give a teacher or recluster_every, not both")
        if not o.teacher and o.target_layer > recipe.model.num_layers and not recipe.model.from_pretrained:
            raise SelfsupError(f"objective.target_layer: {o.target_layer} is not a layer of the model "
                               f"(0..{recipe.model.num_layers})")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        add_mask_embedding(self.encoder.model)
        self.spec = prepared.extras["audio"].spec
        self.seed = recipe.train.seed
        self.projection = torch.nn.Linear(self.encoder.feature_dim, o.embedding_dim)
        self.label_embeddings = torch.nn.Parameter(torch.randn(o.num_clusters, o.embedding_dim))
        self.register_buffer("iteration", torch.tensor(1))  # 1: MFCC targets, 2+: a model's layer
        self.register_buffer("mfcc_centroids", torch.from_numpy(self.fit_mfcc_centroids()))
        self.target_encoder = None
        if o.teacher:
            self.target_encoder, _ = load_speech_encoder(o.teacher)
            if int(self.target_encoder.output_lengths(torch.tensor([16000]))) != self.output_frames(16000):
                raise SelfsupError(f"objective.teacher: {o.teacher} does not give 50 frames/s like the model")
        elif o.recluster_every:
            self.target_encoder = copy.deepcopy(self.encoder)
        if self.target_encoder is not None:
            if o.target_layer >= self.target_encoder.num_layers:
                raise SelfsupError(f"objective.target_layer: {o.target_layer} is not a layer of the target model "
                                   f"(0..{self.target_encoder.num_layers - 1})")
            self.target_encoder.requires_grad_(False).eval()
            self.register_buffer("layer_centroids", torch.zeros(o.num_clusters, self.target_encoder.feature_dim))
            if o.teacher:
                self.fit_layer_centroids()

    def training_clips(self) -> list[np.ndarray]:
        train = self.prepared.train
        return [train[i][0] for i in range(min(len(train), self.options.cluster_clips))]

    def fit_mfcc_centroids(self) -> np.ndarray:
        clips = self.training_clips()
        frames = np.concatenate([mfcc_frames(c, self.spec, self.output_frames(len(c))) for c in clips])
        return fit_kmeans(frames, self.options.num_clusters, self.seed, self.options.cluster_frames)

    @torch.no_grad()
    def fit_layer_centroids(self) -> None:
        """k-means on the target model's layer over the training clips; the next targets come from it."""
        device = self.label_embeddings.device
        feats = encode_clips(self.target_encoder, self.training_clips(), layer=self.options.target_layer,
                             device=device)
        iteration = int(self.iteration) + 1
        centroids = fit_kmeans(np.concatenate(feats), self.options.num_clusters, self.seed + iteration,
                               self.options.cluster_frames)
        self.layer_centroids.copy_(torch.from_numpy(centroids))
        self.iteration.fill_(iteration)

    def recluster(self) -> None:
        """Targets from a fresh copy of this model (iteration n + 1); the cluster embeddings start again."""
        self.target_encoder.load_state_dict(self.encoder.state_dict())
        self.fit_layer_centroids()
        with torch.no_grad():
            self.label_embeddings.normal_()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.target_encoder is not None:
            self.target_encoder.eval()  # a frozen target maker
        return self

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        o = self.options
        n_out = self.output_frames(len(clip))
        mask = frame_span_mask(n_out, self.output_frames(valid), o.mask_prob, o.mask_span, rng)
        feats, centroids = mfcc_frames(clip, self.spec, n_out), self.mfcc_centroids.cpu().numpy()
        distances = (feats ** 2).sum(1)[:, None] - 2 * feats @ centroids.T + (centroids ** 2).sum(1)[None]
        return {"mask": mask, "mfcc_targets": distances.argmin(1)}  # numpy: tiny, and off torch's thread pool

    @torch.no_grad()
    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if int(self.iteration) == 1:
            return batch["mfcc_targets"]
        layer = self.target_encoder.layers(batch["inputs"], self.input_mask(batch))[self.options.target_layer]
        return nearest_centroid(layer, self.layer_centroids)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o = self.options
        targets = self.targets(batch)
        frames = self.encoder.frame_mask(batch["lengths"], targets.shape[1])
        mask = batch["mask"] & frames
        layers, _ = self.encode(batch["inputs"], batch, mask_time_indices=mask)
        self.remember(layers[-1], frames, batch["labels"])
        logits = (F.normalize(self.projection(layers[-1]).float(), dim=-1)
                  @ F.normalize(self.label_embeddings.float(), dim=-1).t()) / o.logit_temperature  # cosine / 0.1
        per_frame = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        unmasked = frames & ~mask
        masked_loss = (per_frame * mask).sum() / mask.sum().clamp_min(1)
        unmasked_loss = (per_frame * unmasked).sum() / unmasked.sum().clamp_min(1)
        correct = logits.argmax(-1) == targets
        return {"loss": masked_loss + o.unmasked_weight * unmasked_loss, "masked_loss": masked_loss.detach(),
                "unmasked_loss": unmasked_loss.detach(),
                "masked_accuracy": (correct & mask).sum() / mask.sum().clamp_min(1),
                "unmasked_accuracy": (correct & unmasked).sum() / unmasked.sum().clamp_min(1),
                "target_iteration": self.iteration.float().clone(), "masked_fraction": mask.sum() / frames.sum().clamp_min(1),
                **codebook_health(targets[frames], o.num_clusters), "n_seconds": batch["n_seconds"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        every = self.options.recluster_every
        if every and step % every == 0 and 0 < step < max_steps:
            self.recluster()

    def export(self, folder) -> None:
        export_encoder(self.encoder, folder, self.front.to_dict())
