"""The scaling ladder's report: the law fitted on every size but the held-out largest, intervals from resampling runs,
the forecast of the held-out size (loss, and accuracy in two steps) against what it reached, plots and a table.

Read by `python training/ladder.py` after its runs (and with `--report-only`); everything comes from the run records
the ladder wrote (cogfm_hf.experiments.ladder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..console import markdown_table
from ..training.plots import plt
from .runs import completed_records
from .scaling_law import Law, bootstrap, fit_accuracy, fit_law, predicted_accuracy
from .stats import percentile_interval

LOSS_TARGET = 0.03  # the forecast's loss within 3% (relative)
ACCURACY_TARGET = 0.05  # and its accuracy within 5 points, where the held-out size is
ABOVE_FLOOR = 0.20  # at least 20 points above the task's constant-answer level
SIX_B = 6e9  # what the law says a 6B CogFM would need


@dataclass
class Forecast:
    run: str
    loss: float
    predicted_loss: float
    loss_interval: tuple[float, float]
    accuracy: float
    predicted_accuracy: float
    accuracy_interval: tuple[float, float]
    most_common: float

    @property
    def loss_error(self) -> float:
        return self.predicted_loss / self.loss - 1

    @property
    def accuracy_counts(self) -> bool:
        return self.accuracy >= self.most_common + ABOVE_FLOOR


def ladder_records(ladder) -> tuple[list[dict], list[dict], dict]:
    """(the ladder's points: each size at its rule's learning rate and batch, every seed and budget; the sweep's runs;
    the rule)."""
    rule_file = ladder.output_dir / "rule.json"
    if not rule_file.is_file():
        return [], [], {}
    decided = json.loads(rule_file.read_text())
    rule = {int(k): v for k, v in decided["rule"].items()}
    config = ladder.config
    records = completed_records(ladder.runs_dir)
    points = [
        r
        for r in records
        if r["layers"] in rule
        and (r["learning_rate"], r["batch_size"])
        == (rule[r["layers"]]["learning_rate"], rule[r["layers"]]["batch_size"])
        and r["budget"] in config.budgets
        and r["seed"] in config.seeds + config.noise_seeds
    ]
    sweep = [
        r
        for r in records
        if r["layers"] in config.sweep.sizes and r["budget"] == config.sweep.tokens and r["seed"] == config.seeds[0]
    ]
    return points, sweep, decided


def id_row(record: dict, family: str) -> dict:
    """The run's final in-distribution row for `family` (training_summary.json's `families`)."""
    for row in record["families"]:
        if row["family"] == family and row["split"] == "ID":
            return row
    raise KeyError(f"{record['run']}: its final evaluation has no in-distribution row for {family}")


def accuracy_of(record: dict, family: str) -> float:
    return id_row(record, family)["after"]


def runs_of(points: list[dict]) -> list[list[dict]]:
    """Points grouped by run (size, seed): a run's budgets share its trunk, so they are resampled together."""
    grouped: dict[tuple, list[dict]] = {}
    for point in points:
        grouped.setdefault((point["layers"], point["seed"]), []).append(point)
    return [sorted(group, key=lambda p: p["budget"]) for _, group in sorted(grouped.items())]


def nd(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([p["non_embedding_parameters"] for p in points], float),
        np.array([p["tokens"] for p in points], float),
    )


def fit_two_steps(points: list[dict], family: str) -> tuple[Law, tuple[float, float, float]]:
    """The OLMo ladder's two steps (Bhagia et al. 2024): (N, D) -> the held-out loss on the family's documents, a law
    of the same form; that loss -> in-distribution exact match, a sigmoid (scaling_law.fit_accuracy)."""
    n, d = nd(points)
    task_loss = np.array([p["heldout_loss"][family] for p in points])
    law = fit_law(n, d, task_loss)
    sigmoid = fit_accuracy(task_loss, [accuracy_of(p, family) for p in points])
    return law, sigmoid


def analyse(ladder) -> dict | None:
    """The fits, intervals and forecasts from the ladder's records (None before the sweep has decided the rule)."""
    config = ladder.config
    points, sweep, decided = ladder_records(ladder)
    if not points:
        return None
    held_out = config.sizes[len(config.sizes) - config.holdout :]
    fitted = [p for p in points if p["layers"] not in held_out]
    out = {"points": points, "sweep": sweep, "decided": decided, "held_out": held_out, "fitted_sizes": []}
    sizes = sorted({p["layers"] for p in fitted})
    out["fitted_sizes"] = sizes
    if len(sizes) < 3 or len(fitted) < 5:
        return out
    n, d = nd(fitted)
    law = fit_law(n, d, [p["heldout_loss"][""] for p in fitted])
    family = config.forecast.family
    floor = float(np.mean([id_row(p, family)["most_common"] for p in points]))  # the same test items every run
    out["floor"] = floor
    task_law, sigmoid = fit_two_steps(fitted, family)
    runs = runs_of(fitted)
    laws = bootstrap(
        [[(p["non_embedding_parameters"], p["tokens"], p["heldout_loss"][""]) for p in run] for run in runs],
        config.bootstrap,
    )
    rng = np.random.default_rng(0)
    two_steps = []
    while len(two_steps) < config.bootstrap:  # both steps refitted on the same resampled runs
        chosen = [point for i in rng.integers(0, len(runs), len(runs)) for point in runs[i]]
        if len({p["layers"] for p in chosen}) < 2:
            continue
        two_steps.append(fit_two_steps(chosen, family))
    out.update(law=law, laws=laws, task_law=task_law, sigmoid=sigmoid)
    largest = max(points, key=lambda p: p["flops"])
    out["compute"] = largest["flops"]
    # A law with a zero exponent has no compute-optimal split: such resamplings are counted, not averaged in.
    splits = [resampled for resampled in laws if has_optimum(resampled)]
    out["degenerate_resamplings"] = len(laws) - len(splits)
    ratios = [float(resampled.tokens_per_parameter(largest["flops"])) for resampled in splits]
    six_b = [optimal_tokens(resampled, SIX_B) for resampled in splits]
    if has_optimum(law):
        out["tokens_per_parameter"] = (float(law.tokens_per_parameter(largest["flops"])), percentile_interval(ratios))
        out["six_b_tokens"] = (optimal_tokens(law, SIX_B), percentile_interval(six_b))
    out["forecasts"] = []
    for point in (p for p in points if p["layers"] in held_out and p["budget"] == max(config.budgets)):
        n_point, d_point = point["non_embedding_parameters"], point["tokens"]
        losses = [float(resampled.loss(n_point, d_point)) for resampled in laws]

        def accuracy_at(step_law: Law, step_sigmoid: tuple[float, float, float]) -> float:
            return float(predicted_accuracy(step_law.loss(n_point, d_point), *step_sigmoid))

        out["forecasts"].append(
            Forecast(
                run=point["run"],
                loss=point["heldout_loss"][""],
                predicted_loss=float(law.loss(n_point, d_point)),
                loss_interval=percentile_interval(losses),
                accuracy=accuracy_of(point, family),
                predicted_accuracy=accuracy_at(task_law, sigmoid),
                accuracy_interval=percentile_interval([accuracy_at(*step) for step in two_steps]),
                most_common=floor,
            )
        )
    return out


def has_optimum(law: Law) -> bool:
    """Whether the law trades N against D at all: with a zero exponent (or coefficient) one term never falls."""
    return min(law.alpha, law.beta, law.A, law.B) > 1e-9


def optimal_tokens(law: Law, parameters: float) -> float:
    """The tokens at which `parameters` is the compute-optimal size (inverting Law.compute_optimal)."""
    exponent = law.beta / (law.alpha + law.beta)
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    return float((parameters / g) ** (1 / exponent) / parameters)


def frontier(law: Law, points: list[dict], compute: np.ndarray) -> np.ndarray:
    """The lowest loss the law gives at each compute (in the FLOPs the runs count, attention and output layer
    included), over models of the ladder's shape rule: their FLOPs per token interpolated in log-log between the
    ladder's sizes (extended linearly), their non-padding share of the token slots the ladder's mean."""
    sizes = sorted({(p["non_embedding_parameters"], p["flops_per_token"]) for p in points})
    log_n, log_cost = np.log([n for n, _ in sizes]), np.log([c for _, c in sizes])
    slope, intercept = np.polyfit(log_n, log_cost, 1)
    fill = np.mean([p["tokens"] / p["token_slots"] for p in points])
    candidates = np.geomspace(np.exp(log_n[0]) / 100, np.exp(log_n[-1]) * 100, 400)
    cost = np.exp(np.interp(np.log(candidates), log_n, log_cost, left=np.nan, right=np.nan))
    outside = np.isnan(cost)
    cost[outside] = np.exp(intercept + slope * np.log(candidates[outside]))
    tokens = fill * np.asarray(compute, float)[:, None] / cost[None, :]
    return law.loss(candidates[None, :], tokens).min(axis=1)


# -- plots ---------------------------------------------------------------------------------------------------------
def plot_loss_vs_compute(analysis: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_size: dict[int, list[dict]] = {}
    for point in analysis["points"]:
        by_size.setdefault(point["layers"], []).append(point)
    for layers, points in sorted(by_size.items()):
        points = sorted(points, key=lambda p: (p["seed"], p["flops"]))
        held = layers in analysis["held_out"]
        n = points[0]["non_embedding_parameters"]
        ax.plot(
            [p["flops"] for p in points],
            [p["heldout_loss"][""] for p in points],
            marker="*" if held else "o",
            linestyle="none",
            markersize=10 if held else 5,
            label=f"{layers} layers, {n / 1e6:.2f} M{' (held out)' if held else ''}",
        )
    if "law" in analysis:
        compute = np.geomspace(
            min(p["flops"] for p in analysis["points"]) / 2, max(p["flops"] for p in analysis["points"]) * 2, 50
        )
        ax.plot(compute, frontier(analysis["law"], analysis["points"], compute), "k--", label="fitted frontier")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs, attention and output layer counted)")
    ax.set_ylabel("held-out loss")
    ax.set_title("Scaling ladder: held-out loss vs compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_predicted_vs_actual(analysis: dict, family: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    law, task_law, sigmoid = analysis["law"], analysis["task_law"], analysis["sigmoid"]
    for point in analysis["points"]:
        held = point["layers"] in analysis["held_out"]
        n, d = point["non_embedding_parameters"], point["tokens"]
        style = dict(marker="*" if held else "o", color="C3" if held else "C0", markersize=11 if held else 5)
        left.plot(law.loss(n, d), point["heldout_loss"][""], linestyle="none", **style)
        accuracy = 100 * float(predicted_accuracy(task_law.loss(n, d), *sigmoid))
        right.plot(accuracy, 100 * accuracy_of(point, family), linestyle="none", **style)
    for ax, label in ((left, "held-out loss"), (right, f"{family} ID exact match (%)")):
        low, high = ax.get_xlim()
        low, high = min(low, ax.get_ylim()[0]), max(high, ax.get_ylim()[1])
        ax.plot([low, high], [low, high], color="gray", linestyle=":")
        ax.set_xlabel(f"predicted {label}")
        ax.set_ylabel(f"actual {label}")
        ax.grid(alpha=0.3)
    left.set_title("loss: law fitted without the star (held out)")
    right.set_title("accuracy: (N, D) -> task loss -> accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- the report ----------------------------------------------------------------------------------------------------
def write_report(ladder, command: str) -> Path:
    config = ladder.config
    report = Path(config.report)
    plots_dir = report.with_suffix("")
    plots_dir.mkdir(parents=True, exist_ok=True)
    analysis = analyse(ladder)
    lines = [
        "# The scaling ladder",
        "",
        f"Written by `{command}` from the runs in `{ladder.output_dir}` (cogfm_hf.experiments.ladder; recipe "
        f"`{config.base}` with the ladder's changes). Regenerate with `--report-only`.",
        "",
    ]
    if analysis is None:
        report.write_text("\n".join(lines + ["No ladder run has completed yet.", ""]))
        return report
    points = analysis["points"]
    first = points[0]
    lines += [
        f"Machine: {first['device']}; precision {first['precision']}. Shapes: width = {config.shape.aspect_ratio} x "
        f"layers, heads of {config.shape.head_dim}, MLP {config.shape.ffn_ratio} x width. Budgets "
        f"{', '.join(f'{b / 1e6:g} M' for b in config.budgets)} token slots (the largest trained as the trunk, each "
        f"smaller a cooldown of {config.cooldown_fraction:.0%} of its steps branched from it); D below is "
        "non-padding tokens.",
        "",
        "## The sweep and the rule",
        "",
        markdown_table(
            ["size", "learning rate", "batch", "held-out loss", "chosen"],
            [
                [
                    f"{r['layers']} layers",
                    f"{r['learning_rate']:g}",
                    str(r["batch_size"]),
                    f"{r['heldout_loss']['']:.4f}",
                    "yes" if r["run"] == analysis["decided"]["sweep"][str(r["layers"])]["run"] else "",
                ]
                for r in sorted(analysis["sweep"], key=lambda r: (r["layers"], r["learning_rate"], r["batch_size"]))
            ],
        ),
        "",
        "Rule (each size's learning rate and batch as a power of N through the two sweep sizes' choices, clipped to "
        "the swept range): "
        + "; ".join(
            f"{layers} layers: lr {v['learning_rate']:g}, batch {v['batch_size']}"
            for layers, v in sorted(analysis["decided"]["rule"].items(), key=lambda kv: int(kv[0]))
        ),
        "",
        "## The runs",
        "",
        markdown_table(
            [
                "size",
                "N (non-embedding)",
                "seed",
                "budget",
                "D (tokens)",
                "FLOPs",
                "held-out loss",
                f"{config.forecast.family} loss",
                f"{config.forecast.family} ID (%)",
                "minutes",
            ],
            [
                [
                    f"{p['layers']} layers" + (" (held out)" if p["layers"] in analysis["held_out"] else ""),
                    f"{p['non_embedding_parameters'] / 1e6:.3f} M",
                    str(p["seed"]),
                    f"{p['budget'] / 1e6:g} M"
                    + (" (trunk)" if p["budget"] == max(config.budgets) else "" if p["branched_from"] else " (sweep)"),
                    f"{p['tokens'] / 1e6:.3g} M",
                    f"{p['flops']:.2e}",
                    f"{p['heldout_loss']['']:.4f}",
                    f"{p['heldout_loss'].get(config.forecast.family, float('nan')):.4f}",
                    f"{100 * accuracy_of(p, config.forecast.family):.1f}",
                    f"{p['train_seconds'] / 60:.1f}",
                ]
                for p in sorted(points, key=lambda p: (p["layers"], p["seed"], p["budget"]))
            ],
        ),
        "",
    ]
    if "law" not in analysis:
        lines += [f"Too few sizes have run to fit the law (fitted sizes so far: {analysis['fitted_sizes']}).", ""]
        report.write_text("\n".join(lines))
        return report
    law, laws = analysis["law"], analysis["laws"]

    def interval(name: str) -> str:
        low, high = percentile_interval([getattr(resampled, name) for resampled in laws])
        return f"{getattr(law, name):.4g} [{low:.4g}, {high:.4g}]"

    loss_plot = plot_loss_vs_compute(analysis, plots_dir / "loss_vs_compute.png")
    lines += [
        "## The law",
        "",
        f"L(N, D) = E + A / N^alpha + B / D^beta, fitted on sizes {analysis['fitted_sizes']} (Huber on log-loss, grid "
        f"then L-BFGS; cogfm_hf.experiments.scaling_law); 95% intervals from {config.bootstrap} resamplings of runs:",
        "",
        markdown_table(["E", "A", "alpha", "B", "beta"], [[interval(n) for n in ("E", "A", "alpha", "B", "beta")]]),
        "",
        f"![loss vs compute]({plots_dir.name}/{loss_plot.name})",
        "",
    ]
    if "tokens_per_parameter" in analysis:
        ratio, (low, high) = analysis["tokens_per_parameter"]
        six_b, (six_low, six_high) = analysis["six_b_tokens"]
        lines += [
            f"Compute-optimal tokens per parameter at the ladder's largest compute ({analysis['compute']:.2e} FLOPs; "
            f"C = 6ND, N non-embedding): **{ratio:.1f}** [{low:.1f}, {high:.1f}]. A 6B CogFM on this mixture would be "
            f"compute-optimal at **{six_b / 1e9:.3g} B** tokens [{six_low / 1e9:.3g}, {six_high / 1e9:.3g}] by this "
            f"law: an extrapolation over "
            f"{np.log10(SIX_B / max(p['non_embedding_parameters'] for p in points)):.0f} orders of magnitude in N, "
            "from models whose every run saw at most a few million tokens: read it as what the law says, not a plan."
            + (
                f" ({analysis['degenerate_resamplings']} of {config.bootstrap} resamplings fitted a zero exponent, "
                "with no optimum; the interval is over the rest.)"
                if analysis["degenerate_resamplings"]
                else ""
            ),
            "",
        ]
    else:
        lines += [
            "The fitted law has a zero exponent or coefficient: it does not trade parameters against tokens, so it "
            "states no compute-optimal split (nor what a 6B model would need). The ladder's D range is too narrow "
            "to separate the two terms.",
            "",
        ]
    lines += [
        "## The forecast of the held-out size",
        "",
    ]
    rows = []
    for f in analysis["forecasts"]:
        rows.append(
            [
                f.run,
                f"{f.loss:.4f}",
                f"{f.predicted_loss:.4f} [{f.loss_interval[0]:.4f}, {f.loss_interval[1]:.4f}]",
                f"{100 * f.loss_error:+.1f}%",
                "met" if abs(f.loss_error) <= LOSS_TARGET else "missed",
                f"{100 * f.accuracy:.1f}",
                f"{100 * f.predicted_accuracy:.1f} "
                f"[{100 * f.accuracy_interval[0]:.1f}, {100 * f.accuracy_interval[1]:.1f}]",
                (
                    ("met" if abs(f.predicted_accuracy - f.accuracy) <= ACCURACY_TARGET else "missed")
                    if f.accuracy_counts
                    else f"does not count: under {100 * (f.most_common + ABOVE_FLOOR):.0f}%"
                ),
            ]
        )
    if rows:
        predicted_plot = plot_predicted_vs_actual(
            analysis, config.forecast.family, plots_dir / "predicted_vs_actual.png"
        )
        lines += [
            markdown_table(
                [
                    "run",
                    "loss",
                    "predicted (95%)",
                    "error",
                    "within 3%",
                    f"{config.forecast.family} ID (%)",
                    "predicted (95%)",
                    "within 5 points",
                ],
                rows,
            ),
            "",
            f"Accuracy in two steps: the held-out loss on {config.forecast.family} documents as a law of (N, D), "
            "then in-distribution exact match as a sigmoid of it (its floor fitted: an untrained model scores near 0, "
            f"below the most-common-answer level of {100 * analysis['floor']:.1f}%); a forecast counts only where the "
            "held-out size is 20 points above that level.",
            "",
            f"![predicted vs actual]({plots_dir.name}/{predicted_plot.name})",
            "",
        ]
    else:
        lines += ["The held-out size has not run yet.", ""]
    report.write_text("\n".join(lines))
    (plots_dir / "summary.json").write_text(
        json.dumps(
            {
                "law": law.__dict__,
                "forecasts": [f.__dict__ for f in analysis["forecasts"]],
                "tokens_per_parameter": analysis.get("tokens_per_parameter"),
            },
            indent=1,
        )
    )
    return report
