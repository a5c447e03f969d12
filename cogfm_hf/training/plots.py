"""PNG plots of a run, written next to its final checkpoint."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_losses(log_history: list[dict], path: Path, title: str = "") -> Path:
    """Training loss, and the loss of each task, against the optimizer step."""
    entries = [e for e in log_history if "loss" in e and "step" in e]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    axis.plot([e["step"] for e in entries], [e["loss"] for e in entries], color="black", linewidth=2, label="total")
    tasks = sorted({k.split("/", 1)[1] for e in entries for k in e if k.startswith("loss_task/")})
    for task in tasks:
        points = [(e["step"], e[f"loss_task/{task}"]) for e in entries if f"loss_task/{task}" in e]
        axis.plot(*zip(*points), linewidth=1, label=task)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy (nats/token)")
    axis.set_title(title or "training loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def plot_eval_history_by_difficulty(
    log_history: list[dict], path: Path, training_top: dict[str, int], title: str = ""
) -> Path | None:
    """Generation accuracy against difficulty, one panel per task and one line per in-loop evaluation
    (light = early, dark = late); the dashed line is the top of the training range (right of it: OOD).
    None when the run logged no evaluation."""
    evaluations = [e for e in log_history if any(k.startswith("eval_difficulty/") for k in e)]
    tasks = sorted({k.split("/")[1] for e in evaluations for k in e if k.startswith("eval_difficulty/")})
    if not tasks:
        return None
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), sharey=True, squeeze=False)
    colors = plt.cm.viridis_r([0.15 + 0.85 * i / max(1, len(evaluations) - 1) for i in range(len(evaluations))])
    for axis, task in zip(axes[0], tasks):
        for color, entry in zip(colors, evaluations):
            points = sorted(
                (int(k.rsplit("/", 1)[1]), v) for k, v in entry.items() if k.startswith(f"eval_difficulty/{task}/")
            )
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, color=color, label=f"step {entry['step']}")
        if task in training_top:
            axis.axvline(training_top[task] + 0.5, color="grey", linestyle="--", linewidth=1)
        axis.set_title(task)
        axis.set_xlabel("difficulty")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("exact match")
    axes[0][-1].legend(fontsize=7)
    figure.suptitle(title or "held-out accuracy by difficulty (dashed: top of the training range)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
