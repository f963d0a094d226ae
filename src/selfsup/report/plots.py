"""Training-curve plots from a run folder's CSV logs (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path


def plot_training_curves(run: Path, filename: str = "loss_curve.png") -> Path | None:
    """Train loss per step (and held-out loss where logged) -> `run/loss_curve.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.engine.pretrain import read_logged
    from selfsup.fileio import atomic_write_bytes

    rows = read_logged(Path(run))
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    held = [(r["step"], r["heldout_loss"]) for r in rows if "heldout_loss" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(*zip(*train), label="train loss", lw=1.2)
    if held:
        ax.plot(*zip(*held), "o-", label="held-out loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(Path(run).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(run) / filename
    atomic_write_bytes(path, buf.getvalue())
    return path
