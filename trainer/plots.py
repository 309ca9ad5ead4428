"""`training_curves.png`: both phases' losses per epoch, and the eval retrieval metrics of the three embeddings."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, never a window (also on machines without a display)
import matplotlib.pyplot as plt  # noqa: E402


def training_curves_png(histories: dict[str, dict[str, list[float]]], eval_metrics: dict[str, dict]) -> bytes:
    """PNG bytes. `histories`: phase → metric name → one value per epoch; `eval_metrics`: embedding → metrics."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    titles = {"phase1": "phase 1: genre warm-up (BCE)", "phase2": "phase 2: semi-hard triplet loss"}
    for axis, phase in zip(axes[:2], ("phase1", "phase2")):
        for name, values in histories.get(phase, {}).items():
            axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
        axis.set_title(titles[phase])
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if histories.get(phase):
            axis.legend()
    _metric_bars(axes[2], eval_metrics)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _metric_bars(axis, eval_metrics: dict[str, dict]) -> None:
    names = [name for name in ("baseline", "colour_histogram", "phase1", "phase2") if name in eval_metrics]
    width = 0.38
    for offset, metric in ((-width / 2, "precision_at_10"), (width / 2, "map_at_10")):
        values = [eval_metrics[name][metric] for name in names]
        bars = axis.bar([i + offset for i in range(len(names))], values, width, label=metric)
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylim(0, 1.05)
    axis.set_title("eval split retrieval (cosine, k=10)")
    axis.legend(loc="lower right")
