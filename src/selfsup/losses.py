"""Pure loss functions shared by the joint-embedding methods (no state; each matches its paper's formula)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy over 2B views (Chen et al. 2020, eq. 1): for each view i
    with positive j, -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), s = cosine similarity; mean over all 2B."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's InfoNCE (He et al. 2020, eq. 1): query q_i's positive is its key k_i, its negatives the queue
    (which must not yet hold this batch's keys). Returns (loss, logits) with the positive in column 0."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ queue.float().t()
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device)), logits


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over the batch (Chen & He 2021, eq. 1)."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalized MSE ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), z from the target (no gradient)."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)).mean()


def _standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """C_ij = sum_b z1_bi z2_bj / N after standardizing each dimension over the batch (Zbontar et al. 2021)."""
    return _standardize(z1.float()).t() @ _standardize(z2.float()) / z1.shape[0]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2 (Barlow Twins, eq. 1)."""
    c = cross_correlation(z1, z2)
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = (c - torch.diag_embed(torch.diagonal(c))).pow(2).sum()
    return on + lambd * off


def vicreg_invariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """s(Z, Z') = mean squared distance between the two embeddings (Bardes et al. 2022, eq. 5)."""
    return F.mse_loss(z1.float(), z2.float())


def vicreg_variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = mean_j max(0, gamma - sqrt(Var(z_j) + eps)) (eq. 1)."""
    std = torch.sqrt(z.float().var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def vicreg_covariance(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = sum_{i != j} Cov(Z)_ij^2 / d (eq. 3-4), Cov with the 1/(n-1) estimator."""
    z = z.float()
    n, d = z.shape
    zc = z - z.mean(0)
    cov = zc.t() @ zc / (n - 1)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return off.pow(2).sum() / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """lambda s(Z,Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')], the paper's weights 25, 25, 1 (eq. 6)."""
    inv = vicreg_invariance(z1, z2)
    var = vicreg_variance(z1) + vicreg_variance(z2)
    cov = vicreg_covariance(z1) + vicreg_covariance(z2)
    loss = sim_weight * inv + var_weight * var + cov_weight * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


@torch.no_grad()
def ema_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """xi <- tau * xi + (1 - tau) * theta for every parameter; buffers (BN statistics) are copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(tau).add_(o.detach(), alpha=1 - tau)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def cosine_momentum(base: float, step: int, total: int) -> float:
    """BYOL's schedule tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, rising from base to 1."""
    return 1 - (1 - base) * (math.cos(math.pi * min(step, total) / max(1, total)) + 1) / 2


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 2.0, alpha: float = 0.5, ignore_index: int = -100) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"):
    alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels).

    The KL term (mean over every row) predicts the teacher's softened class distribution from the student's
    logits; T^2 keeps its gradients on the scale of the hard-label term. The cross-entropy is the mean over
    the labeled rows only: rows whose label is `ignore_index` (unlabeled transfer data) get the KL term alone."""
    t = float(temperature)
    student = student_logits.float()
    log_p_student = F.log_softmax(student / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    labeled = labels != ignore_index
    if bool(labeled.any()):
        ce = F.cross_entropy(student[labeled], labels[labeled])
    else:  # a batch of unlabeled rows only: no hard-label term (kept in the graph as an exact zero)
        ce = student.sum() * 0.0
    return alpha * t * t * kl + (1 - alpha) * ce


def soft_target_kl(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """PET's final-classifier loss (Schick & Schütze 2021, "Exploiting Cloze Questions for Few Shot Text
    Classification and Natural Language Inference"): KL(q || softmax(logits)) = sum_c q_c (log q_c - log p_c),
    averaged over rows. Predicts the ensemble's soft label q (rows of probabilities) from the classifier's
    logits; zero-probability classes contribute 0 (0 log 0 = 0)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return F.kl_div(log_p, target_probs.detach().float(), reduction="batchmean")


def info_nce(predictions: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC's InfoNCE (van den Oord, Li & Vinyals 2018, eq. 4) with in-batch candidates: row i's score against
    every target j is s_ij = p_i . t_j / temperature (the log-bilinear f_k once p = W_k c_t); its positive is
    t_i, the other rows' targets are its negatives. Returns (mean_i -log softmax_j(s_ij)[i], accuracy: the
    fraction of rows whose positive scores highest)."""
    logits = predictions.float() @ targets.float().t() / temperature
    labels = torch.arange(len(logits), device=logits.device)
    loss = F.cross_entropy(logits, labels)
    return loss, (logits.argmax(dim=1) == labels).float().mean()
