"""The plots of an experiment's report (PNG), from its summary: each arm's accuracy by difficulty and its learning
curve. `summary` holds `arms` (each with `by_task` and `curve`), `id_tasks`, `ood_tasks`, `difficulty`,
`training_tops` and `target`, as cogfm_hf.experiments.ablation_report.summarise writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tasks import get_task
from ..training.plots import plt
from .stats import ratio


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str, percent: bool = True) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_arms_by_difficulty(summary: dict, path: Path, experiment: str = "Ablation") -> Path | None:
    if not summary["arms"]:
        return None
    tasks = sorted(summary["id_tasks"] + summary["ood_tasks"], key=lambda t: summary["difficulty"][t])
    x = [summary["difficulty"][t] for t in tasks]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, row in summary["arms"].items():
        means = [100 * row["by_task"][t][0] for t in tasks]
        stds = [100 * row["by_task"][t][1] for t in tasks]
        ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=arm)
    for top in summary["training_tops"].values():
        ax.axvline(top + 0.5, color="gray", linestyle=":")
    knobs = ", ".join(sorted({get_task(task).difficulty_knob for task in summary["training_tops"]}))
    return _finish(
        fig,
        ax,
        path,
        f"difficulty ({knobs}); dotted line: top of the training range",
        "test exact match (%)",
        f"{experiment}: accuracy by difficulty (mean ± std over seeds)",
    )


def plot_learning_curves(summary: dict, path: Path, experiment: str = "Ablation") -> Path | None:
    if not summary["arms"]:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, row in summary["arms"].items():
        curves = [
            [(p["tokens"], ratio(v for t, v in p["exact_match"].items() if t in summary["id_tasks"])) for p in curve]
            for curve in row["curve"]
        ]
        length = min(len(c) for c in curves)
        if length == 0:
            continue
        tokens = [np.mean([c[i][0] for c in curves]) / 1e6 for i in range(length)]
        accuracy = [100 * np.mean([c[i][1] for c in curves]) for i in range(length)]
        ax.plot(tokens, accuracy, marker=".", label=arm)
    ax.axhline(100 * summary["target"], color="gray", linestyle=":")
    return _finish(
        fig,
        ax,
        path,
        "non-padding training tokens (M)",
        "in-loop ID exact match (%)",
        f"{experiment}: learning curves (mean over seeds)",
    )


def plot_curves_by_task(summary: dict, path: Path, experiment: str = "Ablation") -> Path | None:
    """One panel per in-loop task: each arm's exact match over training, mean over seeds with their range shaded.
    Where the ID mean hides it, this shows what a single set does: in-context learning that comes and goes (Singh
    et al., arXiv 2311.08360), or a deeper bucket learned later than a shallow one."""
    tasks = sorted({t for row in summary["arms"].values() for c in row["curve"] for p in c for t in p["exact_match"]})
    if not tasks:
        return None
    columns = min(4, len(tasks))
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharex=True, sharey=True, squeeze=False
    )
    for ax, task in zip(axes.flat, tasks):
        for arm, row in summary["arms"].items():
            curves = [[(p["tokens"], p["exact_match"].get(task)) for p in curve] for curve in row["curve"]]
            length = min((len(c) for c in curves), default=0)
            if length == 0 or any(c[i][1] is None for c in curves for i in range(length)):
                continue
            tokens = [np.mean([c[i][0] for c in curves]) / 1e6 for i in range(length)]
            values = np.array([[100 * c[i][1] for i in range(length)] for c in curves])
            (line,) = ax.plot(tokens, values.mean(axis=0), marker=".", label=arm)
            ax.fill_between(tokens, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15)
        ax.set_title(task.removeprefix("cogfm_"), fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("non-padding training tokens (M)")
    fig.supylabel("in-loop exact match (%)")
    fig.suptitle(f"{experiment}: each in-loop set over training (mean over seeds, range shaded)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_loss_curves(summary: dict, path: Path, experiment: str = "Ablation") -> Path | None:
    """Training loss against tokens, mean over each arm's seeds (arms whose records hold the loss)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for arm, row in summary["arms"].items():
        curves = [curve for curve in row.get("loss_curve", []) if curve]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        tokens = [np.mean([c[i]["tokens"] for c in curves]) / 1e6 for i in range(length)]
        ax.plot(tokens, [np.mean([c[i]["loss"] for c in curves]) for i in range(length)], label=arm)
        plotted = True
    if not plotted:
        plt.close(fig)
        return None
    title = f"{experiment}: training loss (mean over seeds)"
    return _finish(fig, ax, path, "non-padding training tokens (M)", "training loss", title, percent=False)
