"""Plots of fine-tuning curves (matplotlib, no display needed): loss and the task's main metric per epoch,
one line per run (e.g. pretrained vs scratch)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if fig.get_layout_engine() is None:  # a figure made with layout="constrained" places its own title
        fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_history(curves: Mapping[str, Sequence[dict]], path: str | Path, metric: str, title: str = "") -> Path:
    """`curves`: run name -> history rows (`epoch`, `train_loss`, `eval_loss`, metric). Left: train (solid)
    and eval (dashed) loss; right: the eval metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for i, (name, rows) in enumerate(curves.items()):
        color = f"C{i}"
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-o", color=color, label=f"{name} train", ms=3)
        ax_loss.plot(epochs, [r.get("eval_loss") for r in rows], "--s", color=color, label=f"{name} eval", ms=3)
        ax_metric.plot(epochs, [r.get(metric) for r in rows], "-o", color=color, label=name, ms=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss" + (f" — {title}" if title else ""))
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(f"eval {metric}")
    ax_metric.set_title(f"eval {metric}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    atomic_write_bytes(path, _figure_bytes(fig))
    return path


def plot_similarity(matrix, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A cosine-similarity matrix as a heat map with the sentences (shortened) as tick labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    n = len(labels)
    size = max(4.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=110)
    im = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    short = [s if len(s) <= 40 else s[:37] + "..." for s in labels]
    ax.set_xticks(range(n), [str(i) for i in range(n)], fontsize=7)
    ax.set_yticks(range(n), [f"{i}: {s}" for i, s in enumerate(short)], fontsize=7)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.04)
    if title:
        ax.set_title(title)
    path = Path(path)
    atomic_write_bytes(path, _figure_bytes(fig))
    return path


def plot_suite(curves: Mapping[str, Mapping[str, Sequence[dict]]], metrics: Mapping[str, str], path: str | Path,
               title: str = "") -> Path:
    """One row per task: loss per epoch (train solid, eval dashed) and the task's metric per epoch, one
    colour per model x init (e.g. pretrained vs scratch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    from matplotlib.ticker import MaxNLocator

    tasks = list(curves)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.4 * len(tasks)), dpi=110, squeeze=False,
                             layout="constrained")  # the suptitle gets its own room above the first row
    for (ax_loss, ax_metric), task in zip(axes, tasks):
        metric = metrics[task]
        for i, (name, rows) in enumerate(curves[task].items()):
            color = f"C{i}"
            epochs = [r["epoch"] for r in rows]
            ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-o", color=color, label=f"{name} train", ms=3)
            ax_loss.plot(epochs, [r.get("eval_loss") for r in rows], "--s", color=color, label=f"{name} eval",
                         ms=3)
            ax_metric.plot(epochs, [r.get(metric) for r in rows], "-o", color=color, label=name, ms=3)
        ax_loss.set_title(f"{task}: loss")
        ax_metric.set_title(f"{task}: eval {metric}")
        for ax in (ax_loss, ax_metric):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    path = Path(path)
    atomic_write_bytes(path, _figure_bytes(fig))
    return path
