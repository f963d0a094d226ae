"""The image classifier that `finetune --task image-classification` trains: an exported image encoder's pooled
features + a seeded linear head; and its conversion to transformers' own image-classification class, so a
fine-tuned folder loads with plain `transformers.AutoModelForImageClassification`. Imports torch at the top:
import it only when a model is built.

The conversion is exact, not an approximation: `ResNetForImageClassification` is `Linear(Flatten(pooler_output))`
of `ResNetModel`, which is selfsup's ResNet feature (`VisionEncoder`: `pooler_output.flatten(1)`);
`ViTForImageClassification` is `Linear` of the final layer-normed [CLS] state, which is selfsup's ViT feature
with `pooling: cls`. `ViTForImageClassification` cannot read selfsup's default ViT feature (`pooling: mean`,
the mean of the final patch tokens), so a mean-pooled ViT becomes `Dinov2ForImageClassification`: DINOv2 is the
same pre-norm transformer (its layer scales set to 1), and its classifier reads [CLS | mean of patch tokens],
whose [CLS] half gets zero weights. The weight renaming is hand-written: transformers converts no ViT to
DINOv2. A ViT whose MLP width is no whole multiple of its width (rare) keeps selfsup's format (None)."""
from __future__ import annotations

import torch


class ImageClassifier(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, num_labels: int, seed: int):
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(encoder.feature_dim, num_labels)
        self.num_labels = num_labels

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(pixel_values))


class NativeImageClassifier(torch.nn.Module):
    """A transformers `*ForImageClassification` behind ImageClassifier's interface: normalized images -> logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.num_labels = int(model.config.num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def native_class(encoder) -> str:
    """The transformers class that computes exactly `ImageClassifier` on this VisionEncoder."""
    if encoder.kind == "resnet":
        return "ResNetForImageClassification"
    if encoder.pooling == "cls" and encoder.model.config.model_type == "vit":
        return "ViTForImageClassification"
    return "Dinov2ForImageClassification"  # a mean-pooled ViT (or a ViT already carried over to DINOv2)


def to_transformers(classifier: ImageClassifier, labels: list[str]):
    """The trained classifier as transformers' image-classification model (same weights, same logits), with
    the label set in its config (id2label / label2id); None where no transformers class computes it."""
    import copy

    import transformers as tf

    name = native_class(classifier.encoder)
    hf = classifier.encoder.model
    config, state = copy.deepcopy(hf.config), hf.state_dict()
    head = {k: v.detach() for k, v in classifier.head.state_dict().items()}
    if name == "Dinov2ForImageClassification":
        if config.model_type == "vit":
            config, state = _vit_as_dinov2(config, state)
            if config is None:
                return None
        zeros = torch.zeros_like(head["weight"])  # the classifier reads [CLS | patch mean]: zero the unused half
        pair = (head["weight"], zeros) if classifier.encoder.pooling == "cls" else (zeros, head["weight"])
        head["weight"] = torch.cat(pair, dim=1)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {lab: i for i, lab in enumerate(labels)}
    config.problem_type = "single_label_classification"
    config.architectures = [name]
    model = getattr(tf, name)(config)
    prefix = {"ResNetForImageClassification": "resnet", "ViTForImageClassification": "vit"}.get(name, "dinov2")
    weights = {f"{prefix}.{k}": v for k, v in state.items() if not k.startswith("pooler.")}  # unused by the heads
    weights.update({f"{'classifier.1' if prefix == 'resnet' else 'classifier'}.{k}": v for k, v in head.items()})
    if prefix == "dinov2":  # DINOv2's masked-image token and layer scales: unused at inference, scales of 1
        weights.update({k: torch.ones_like(v) if k.endswith("lambda1") else v
                        for k, v in model.state_dict().items() if k not in weights})
    model.load_state_dict(weights)  # strict: every weight of the transformers class is accounted for
    return model.eval()


def _vit_as_dinov2(config, state: dict):
    """A ViTModel's config and weights as a Dinov2Model's: the same pre-norm transformer (DINOv2's layer scales
    set to 1, its position embeddings used as they are at the training size); (None, None) where the ViT's
    MLP width is not a whole multiple of its width (DINOv2's `mlp_ratio` is an int)."""
    import re

    import transformers as tf

    ratio, rest = divmod(config.intermediate_size, config.hidden_size)  # DINOv2's mlp_ratio is an int
    if rest:
        return None, None
    dino = tf.Dinov2Config(hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
                           num_attention_heads=config.num_attention_heads, mlp_ratio=ratio,
                           hidden_act=config.hidden_act, layer_norm_eps=config.layer_norm_eps,
                           image_size=config.image_size, patch_size=config.patch_size,
                           num_channels=config.num_channels, qkv_bias=config.qkv_bias, layerscale_value=1.0,
                           hidden_dropout_prob=config.hidden_dropout_prob,
                           attention_probs_dropout_prob=config.attention_probs_dropout_prob)
    names = {"layernorm_before": "norm1", "layernorm_after": "norm2"}
    renamed = {}
    for key, value in state.items():
        m = re.match(r"(?:encoder\.)?layers?\.(\d+)\.([a-z_]+)(\..*)", key)
        if m:
            key = f"encoder.layer.{m.group(1)}.{names.get(m.group(2), m.group(2))}{m.group(3)}"
        renamed[key] = value
    return dino, renamed
