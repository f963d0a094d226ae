"""Every plot selfsup draws (matplotlib, no display needed), as pure functions of numbers: pretraining loss
curves, fine-tuning curves (loss and the main metric per epoch, one line per run), suite grids, similarity
maps, the early-exit sweep, the pruning size/accuracy trade-off, a SUPERB probe's layer weights,
anomaly-score histograms, rate-distortion curves, image grids (VAE samples) and 2-D scatter panels. Imports only
`selfsup.fileio`, so any layer may draw."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence


def figure_bytes(fig) -> bytes:
    """PNG bytes of a matplotlib figure (laid out unless it has a layout engine), the figure closed."""
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
        for ax, key, style, label in ((ax_loss, "eval_loss", "--s", f"{name} eval"), (ax_metric, metric, "-o", name)):
            evaluated = [r for r in rows if r.get(key) is not None]  # `eval_every` > 1: join the epochs evaluated
            ax.plot([r["epoch"] for r in evaluated], [r[key] for r in evaluated], style, color=color, label=label,
                    ms=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss" + (f" — {title}" if title else ""))
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(f"eval {metric}")
    ax_metric.set_title(f"eval {metric}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        if len(curves) > 3:  # many runs: the legend goes beside the plot, off the data
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        else:
            ax.legend(fontsize=8)
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
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
    atomic_write_bytes(path, figure_bytes(fig))
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
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_training_curves(rows: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """Train loss per step (and held-out loss where logged) from a pretraining run's logged rows; no picture
    (None) for a run with fewer than two logged steps, where a curve says nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    held = [(r["step"], r["heldout_loss"]) for r in rows if "heldout_loss" in r]
    if len(train) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(*zip(*train), label="train loss", lw=1.2)
    if held:
        ax.plot(*zip(*held), "o-", label="held-out loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_sweep(result: dict, path: Path) -> Path:
    """Left: accuracy vs wall-time speedup (one point per threshold, the full model at 1); right: accuracy
    vs average exit layer, with each layer's head alone for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    rows, full = result["rows"], result["full"]
    fig, (ax_speed, ax_layer) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    speed, acc = [r["speedup"] for r in rows], [r["accuracy"] for r in rows]
    ax_speed.plot(speed, acc, "-o", ms=4, label="early exit (best repeat)")
    slowest = [r.get("speedup_slowest_repeat", r["speedup"]) for r in rows]
    if any(lo < hi for lo, hi in zip(slowest, speed)):  # how much the timing moved between repeats
        ax_speed.errorbar(speed, acc, xerr=[[hi - lo for lo, hi in zip(slowest, speed)], [0] * len(rows)], fmt="none",
                          ecolor="C0", alpha=0.5, capsize=2, label="down to the slowest repeat")
    ax_speed.plot([1.0], [full["accuracy"]], "*", ms=12, color="C3", label="full model")
    name = "threshold" if result["rule"] == "entropy" else "patience"
    for i, r in enumerate(rows):  # alternate above / below so neighbouring labels do not overlap
        ax_speed.annotate(f"{name} {r['threshold']:g}", (r["speedup"], r["accuracy"]), fontsize=7,
                          textcoords="offset points", xytext=(4, 6 if i % 2 == 0 else -11),
                          bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax_speed.set_xlabel("wall-time speedup over the full model")
    ax_speed.set_ylabel("accuracy")
    ax_speed.set_title(f"speed vs accuracy ({result['rule']})")
    ax_layer.plot([r["avg_exit_layer"] for r in rows], [r["accuracy"] for r in rows], "-o", ms=4,
                  label="early exit")
    ax_layer.plot(range(1, full["layers"] + 1), full["layer_accuracy"], "--s", ms=3, color="C2",
                  label="one layer's head alone")
    ax_layer.set_xlabel("average exit layer")
    ax_layer.set_ylabel("accuracy")
    ax_layer.set_title("depth vs accuracy")
    for ax in (ax_speed, ax_layer):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    atomic_write_bytes(Path(path), figure_bytes(fig))
    return Path(path)


def plot_size_accuracy(rows: Sequence[dict], metric: str, path: Path, title: str = "") -> Path:
    """The metric against the parameter count, one line per pruning method, each starting at the original."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    origin = [r for r in rows if r["method"] in ("none", "teacher")]
    for i, method in enumerate(sorted({r["method"] for r in rows} - {"none", "teacher"})):
        series = sorted(origin + [r for r in rows if r["method"] == method], key=lambda r: -r["parameters"])
        ax.plot([r["parameters"] for r in series], [r.get(metric) for r in series], "-o", color=f"C{i}",
                label=method, ms=4)
    for r in origin:
        ax.plot([r["parameters"]], [r.get(metric)], "k*", ms=10, label=r["setting"])
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"eval {metric}")
    ax.set_title(title or f"{metric} vs size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_layer_weights(weights: Sequence[float], path: str | Path, title: str = "") -> Path:
    """The learned softmax layer weights of a SUPERB probe as bars (layer 0 = the input projection / CNN
    output), with the uniform starting value 1 / layers dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    n = len(weights)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * n + 2.0), 3.4), dpi=110)
    ax.bar(range(n), weights, color="C0")
    ax.axhline(1.0 / max(1, n), ls="--", color="0.4", lw=1, label=f"uniform (1/{n})")
    ax.set_xticks(range(n))
    ax.set_xlabel("layer")
    ax.set_ylabel("weight")
    ax.set_title(title or "learned layer weights", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_score_histogram(normal: Sequence[float], anomalous: Sequence[float] | None, path: str | Path,
                         threshold: float | None = None, title: str = "") -> Path:
    """Histograms of anomaly scores: normal rows vs anomalous rows (or all rows when `anomalous` is None),
    on shared bins, with the decision threshold as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from selfsup.fileio import atomic_write_bytes

    groups = {"normal": np.asarray(normal, float)} if anomalous is not None else {"all rows": np.asarray(normal, float)}
    if anomalous is not None:
        groups["anomalous"] = np.asarray(anomalous, float)
    values = np.concatenate([v for v in groups.values() if len(v)])
    log = values.min() > 0 and values.max() > 30 * values.min()  # heavy-tailed (reconstruction errors)
    bins = np.geomspace(values.min(), values.max(), 41) if log else np.histogram_bin_edges(values, bins=40)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    if log:
        ax.set_xscale("log")
    for i, (name, v) in enumerate(groups.items()):
        ax.hist(v, bins=bins, alpha=0.55, color=f"C{i}", label=f"{name} ({len(v)})",
                weights=np.full(len(v), 1.0 / max(1, len(v))))
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.set_ylabel("fraction of rows")
    ax.set_title(title or "anomaly scores")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_rate_distortion(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path,
                         xlabel: str = "code size", title: str = "") -> Path:
    """One line per method: (code size, distortion) points, distortion on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for i, (name, points) in enumerate(curves.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, "-o", ms=4, color=f"C{i}", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out reconstruction MSE")
    ax.set_title(title or "rate-distortion")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_image_grid(rows: Mapping[str, Sequence], path: str | Path, title: str = "", vmax: float | None = None) -> Path:
    """A grid of grey images: one labelled row per entry of `rows` (name -> sequence of 2-d arrays)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    n_cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(0.9 * n_cols + 1.2, 0.95 * len(rows) + 0.5), dpi=110,
                             squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(images):
                ax.imshow(images[c], cmap="gray_r", vmin=0, vmax=vmax)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_groups_2d(panels: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "",
                   explained: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Side-by-side scatter plots of 2-D points, one colour per group (e.g. two languages' word embeddings
    before and after an alignment); `panels` is {panel title: {group: array of shape (n, 2)}}; `explained`, per
    panel, the share of variance of its two principal axes (shown on the axis labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), dpi=110, squeeze=False)
    for ax, (name, groups) in zip(axes[0], panels.items()):
        for group, points in groups.items():
            ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6, label=group)
        ax.set_title(name)
        share = (explained or {}).get(name)
        ax.set_xlabel("principal axis 1" + (f" ({100 * share[0]:.0f}% of variance)" if share else ""))
        ax.set_ylabel("principal axis 2" + (f" ({100 * share[1]:.0f}% of variance)" if share else ""))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_metric_vs_steps(panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: str | Path,
                         title: str = "") -> Path:
    """One panel per task (its title names the metric): one line per model x init, the score of the model
    exported at each pretraining step (BERT embryology)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), dpi=110, squeeze=False,
                             layout="constrained")
    for ax, (task, lines) in zip(axes[0], panels.items()):
        for i, (name, points) in enumerate(lines.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, "-o", ms=4, color=f"C{i}", label=name)
        ax.set_title(task)
        ax.set_xlabel("pretraining step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig))
    return path


def plot_grouped_bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str, title: str = "",
                      reference: Mapping[str, float] | None = None) -> Path:
    """One group of bars per key (e.g. a task), one bar per inner key (e.g. before / after); `reference` draws a
    dashed line over each group (e.g. the majority-class rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.fileio import atomic_write_bytes

    names = list(groups)
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(names) + 2), 3.6), dpi=110)
    for j, s in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [groups[n].get(s, float("nan")) for n in names], width, label=s, color=f"C{j}")
    for i, n in enumerate(names):
        if reference and n in reference:
            ax.hlines(reference[n], i - 0.45, i + 0.45, colors="k", linestyles="--", lw=1,
                      label="majority class" if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(Path(path), figure_bytes(fig))
    return Path(path)
