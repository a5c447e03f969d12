"""PNG plots of a run, written next to its final checkpoint."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402


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
