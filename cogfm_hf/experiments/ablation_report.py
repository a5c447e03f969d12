"""The ablation's report: `results.md`, `results.json` and two plots, from the completed runs alone.

Every number comes from a run's `ablation_eval.json`: lm-eval's per-item exact match on the saved
checkpoint (test and dev sets), its in-loop learning curve and its training summary.

- In- and out-of-distribution: a test task is in-distribution when its difficulty is within the base
  recipe's training range for that task.
- Mean ± std over seeds, and arm minus baseline (or minus its control) by a paired bootstrap over test items:
  see cogfm_hf.experiments.stats.
- OOD with headroom: the OOD test tasks on which the baseline's dev accuracy (mean over its seeds) lies within
  HEADROOM, where an arm can gain or lose; at 0 or 100 every arm ties and an OOD mean over such buckets only
  dilutes a difference. Chosen on the dev sets, never on test.
- Tokens to target: the non-padding tokens at the first in-loop evaluation whose in-distribution
  accuracy reaches `target` (resolution: the evaluation cadence).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..data.recipe import DataRecipe
from .plots import plot_arms_by_difficulty, plot_curves_by_task, plot_learning_curves, plot_loss_curves
from .selection import chosen_learning_rate, dev_score, selection_choices, sweep_runs
from .stats import comparison_rng, items, mean_std, paired_bootstrap, ratio


def split_tasks(records: list[dict], tops: dict[str, int]) -> dict[str, str]:
    """Test task -> "id" / "ood", by its difficulty against its task's training range."""
    return {
        name: "id" if result["difficulty"] <= tops.get(result["task"], math.inf) else "ood"
        for record in records
        for name, result in record["test"].items()
    }


HEADROOM = (0.05, 0.95)


def headroom_tasks(baseline_runs: list[dict], ood_tasks: list[str]) -> list[str]:
    """The OOD test tasks whose dev set (`<task>_dev`) the baseline scores within HEADROOM, mean over its seeds."""
    chosen = []
    for task in ood_tasks:
        scores = [ratio(r["dev"][f"{task}_dev"]["correct"]) for r in baseline_runs if f"{task}_dev" in r["dev"]]
        if scores and HEADROOM[0] <= float(np.mean(scores)) <= HEADROOM[1]:
            chosen.append(task)
    return chosen


def markers_on(runs: list[dict], task: str) -> dict:
    """How a task's test solutions use the BACK marker, items pooled over seeds: the share that write it, and the
    exact match of those that do and of those that do not (None where there are none)."""
    marker = np.array([m for r in runs for m in r["test"][task]["marker"]], dtype=bool)
    correct = np.array([c for r in runs for c in r["test"][task]["correct"]], dtype=np.float64)
    return {
        "marker_rate": float(marker.mean()),
        "correct_with_marker": float(correct[marker].mean()) if marker.any() else None,
        "correct_without_marker": float(correct[~marker].mean()) if (~marker).any() else None,
    }


def tokens_to_target(record: dict, id_tasks: list[str], target: float) -> int | None:
    for point in record["curve"]:
        scores = [v for task, v in point["exact_match"].items() if task in id_tasks]
        if scores and ratio(scores) >= target:
            return point["tokens"]
    return None


def learnability_gate(config, baseline_runs: list[dict], kinds: dict[str, str]) -> dict | None:
    """The baseline's dev exact match on its easiest and its hardest in-distribution bucket (all seeds)."""
    dev = {}  # dev task -> (difficulty, items over seeds)
    for record in baseline_runs:
        for task, result in record["dev"].items():
            if kinds.get(task.removesuffix("_dev")) == "id":
                dev.setdefault(task, (result["difficulty"], []))[1].extend(result["correct"])
    if not dev:
        return None
    by_difficulty = sorted(dev.items(), key=lambda item: item[1][0])
    gate = {}
    for name, (task, (_, correct)) in (("easiest", by_difficulty[0]), ("top", by_difficulty[-1])):
        gate[name] = {"task": task, "dev": round(ratio(correct), 4), "needed": config.gate[name]}
    gate["passed"] = all(gate[name]["dev"] >= gate[name]["needed"] for name in ("easiest", "top"))
    return gate


def summarise(config, base: dict, records: list[dict], learning_rate: float | None = None) -> dict:
    """The runs at `learning_rate`, or (None) at the sweep's choice."""
    tops = DataRecipe.from_dict(base["data"]).task_difficulty_tops()
    kinds = split_tasks(records, tops)
    sweep_choice = chosen_learning_rate(config, records, float(base["training"]["learning_rate"]))
    if learning_rate is None:
        learning_rate = sweep_choice
    sweep = {
        r["learning_rate"]: {"dev": round(dev_score(r), 4), "train_seconds": r["train_seconds"]}
        for r in sweep_runs(config, records)
    }
    main = [r for r in records if r["learning_rate"] == learning_rate]
    covered = main + [r for r in sweep_runs(config, records) if r not in main]  # what the report's tables show
    by_arm: dict[str, list[dict]] = {}
    for record in main:
        by_arm.setdefault(record["arm"], []).append(record)
    difficulty = {t: r["test"][t]["difficulty"] for r in records for t in r["test"]}
    id_tasks = sorted((t for t, k in kinds.items() if k == "id"), key=lambda t: (difficulty[t], t))
    ood_tasks = sorted((t for t, k in kinds.items() if k == "ood"), key=lambda t: (difficulty[t], t))
    # A control named by a selection is the arm it chose (none while undecided), as the runner chooses it.
    chosen = {name: arm for name, (arm, _) in selection_choices(config, main, learning_rate).items()}
    headroom = headroom_tasks(by_arm.get("baseline", []), ood_tasks)
    arms = {}
    for arm in [a for a in config.arms if a in by_arm]:
        runs = sorted(by_arm[arm], key=lambda r: r["seed"])
        # Every arm against the baseline, and against its control where the recipe names one.
        control = chosen.get(config.controls.get(arm), config.controls.get(arm))
        comparisons = {
            label: other
            for label, other in (("baseline", "baseline"), ("control", control))
            if other in by_arm and other != arm
        }
        row = {
            "seeds": [r["seed"] for r in runs],
            "changes": runs[0]["changes"],
            **({"control": comparisons["control"]} if "control" in comparisons else {}),
            "tokens": [r["num_input_tokens_seen"] for r in runs],
            "token_slots": [r["token_slots"] for r in runs],
            "steps": [r["global_step"] for r in runs],
            "seconds": round(sum(r["train_seconds"] + r["eval_seconds"] for r in runs), 1),
        }
        for kind, tasks in (("id", id_tasks), ("ood", ood_tasks), ("headroom", headroom)):
            row[kind] = mean_std([float(items(r, tasks).mean()) for r in runs]) if tasks else None
            for label, other in comparisons.items():
                row[f"{kind}_vs_{label}"] = paired_bootstrap(
                    runs, by_arm[other], tasks, comparison_rng(arm, other, kind)
                )
        row["by_task"] = {
            t: mean_std([float(np.mean(r["test"][t]["correct"])) for r in runs]) for t in id_tasks + ood_tasks
        }
        row["by_seed"] = {
            r["seed"]: {t: float(np.mean(r["test"][t]["correct"])) for t in id_tasks + ood_tasks} for r in runs
        }  # the spread behind the std: seeds differ more than items resample
        reached = [tokens_to_target(r, id_tasks, config.target) for r in runs]
        row["tokens_to_target"] = reached
        row["markers_by_task"] = {t: markers_on(runs, t) for t in id_tasks + ood_tasks}
        row["marker_rate"] = mean_std([ratio(m for t in r["test"].values() for m in t["marker"]) for r in runs])
        row["self_correction"] = {
            # NaN: a rate whose kind of item the evaluation's limit left out (eval_tasks/utils.mean_where_defined)
            metric: mean_std(
                [
                    v[metric]
                    for r in runs
                    for v in r["self_correction"].values()
                    if not math.isnan(v.get(metric, math.nan))
                ]
            )
            for metric in ("marker_rate", "false_marker_rate", "self_corrected")
        }
        row["curve"] = [r["curve"] for r in runs]
        row["loss_curve"] = [r.get("loss_curve", []) for r in runs]
        arms[arm] = row
    gate = learnability_gate(config, by_arm.get("baseline", []), kinds)
    # Arms that change the architecture face the gate too: whether a model learns the task at all is their question.
    architecture_gates = {
        arm: learnability_gate(config, runs, kinds)
        for arm, runs in by_arm.items()
        if arm != "baseline" and runs and runs[0]["changes"].get("model")
    }
    return {
        "learning_rate": learning_rate,
        "sweep_choice": sweep_choice,
        "sweep": sweep,
        "id_tasks": id_tasks,
        "ood_tasks": ood_tasks,
        "headroom_tasks": headroom,
        "training_tops": tops,
        "arms": arms,
        "gate": gate,
        "architecture_gates": architecture_gates,
        "target": config.target,
        "difficulty": difficulty,
        # `bf16: auto` trains in bf16 or fp32 by machine: the same command, not the same numbers
        "machines": sorted(
            {
                f"{r['precision']} on {r['device']}" if "precision" in r else "not recorded (run before runs named it)"
                for r in covered
            }
        ),
        "total_seconds": round(sum(r["train_seconds"] + r["eval_seconds"] for r in covered), 1),
        "runs": len(covered),
    }


def _pct(pair) -> str:
    if pair is None or pair[0] != pair[0]:
        return "–"
    return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"


def _interval(triple) -> str:
    if triple is None:
        return "–"
    return f"{100 * triple[0]:+.1f} [{100 * triple[1]:+.1f}, {100 * triple[2]:+.1f}]"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _tokens(reached: list) -> str:
    got = [t for t in reached if t is not None]
    if not got:
        return f"not reached (0/{len(reached)})"
    text = f"{np.mean(got) / 1e6:.2f} M"
    return text if len(got) == len(reached) else f"{text} ({len(got)}/{len(reached)} reached)"


def _changes(changes: dict) -> str:
    parts = [f"{k}={v}" for k, v in changes.items() if not isinstance(v, dict)]
    sections = ("loss", "curriculum", "model", "tasks", "position_coupling", "schedule", "averaging")
    parts += [f"{section}.{k}={v}" for section in sections for k, v in changes.get(section, {}).items()]
    parts += [f"knobs.{task}.{k}={v}" for task, knobs in changes.get("knobs", {}).items() for k, v in knobs.items()]
    return ", ".join(parts) or "(none)"


def _gate_text(gate: dict | None, arm: str) -> str:
    if gate is None:
        return f"not measured (no {arm} run)"
    return (
        f"{'passed' if gate['passed'] else 'NOT passed'}: {arm} dev exact match "
        f"{100 * gate['easiest']['dev']:.1f}% on `{gate['easiest']['task']}` (needed "
        f"{100 * gate['easiest']['needed']:.0f}%) and {100 * gate['top']['dev']:.1f}% on "
        f"`{gate['top']['task']}` (needed {100 * gate['top']['needed']:.0f}%), mean over seeds."
    )


def markdown(summary: dict, command: str) -> str:
    lines = [
        "| arm | changes vs baseline | seeds | ID exact match | OOD exact match | OOD with headroom "
        "| ID − baseline [95% CI] | OOD − baseline [95% CI] | OOD with headroom − baseline [95% CI] "
        "| tokens to target | marker rate (test) | self-correction: marker / false marker |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, row in summary["arms"].items():
        sc = row["self_correction"]
        lines.append(
            f"| {arm} | {_changes(row['changes'])} | {len(row['seeds'])} | {_pct(row['id'])} | {_pct(row['ood'])} "
            f"| {_pct(row.get('headroom'))} | {_interval(row.get('id_vs_baseline'))} "
            f"| {_interval(row.get('ood_vs_baseline'))} | {_interval(row.get('headroom_vs_baseline'))} "
            f"| {_tokens(row['tokens_to_target'])} | {_pct(row['marker_rate'])} "
            f"| {_pct(sc['marker_rate'])} / {_pct(sc['false_marker_rate'])} |"
        )
    per_task = [
        "| arm | "
        + " | ".join(
            f"{t.removeprefix('cogfm_')} ({'ID' if t in summary['id_tasks'] else 'OOD'})"
            for t in summary["id_tasks"] + summary["ood_tasks"]
        )
        + " |",
        "|---|" + "---|" * (len(summary["id_tasks"]) + len(summary["ood_tasks"])),
    ]
    per_seed = [per_task[0].replace("| arm |", "| arm, seed |", 1), per_task[1]]
    for arm, row in summary["arms"].items():
        per_seed += [
            f"| {arm}, {seed} | "
            + " | ".join(f"{100 * scores[t]:.1f}" for t in summary["id_tasks"] + summary["ood_tasks"])
            + " |"
            for seed, scores in row["by_seed"].items()
        ]
    for arm, row in summary["arms"].items():
        per_task.append(
            f"| {arm} | "
            + " | ".join(_pct(row["by_task"][t]) for t in summary["id_tasks"] + summary["ood_tasks"])
            + " |"
        )
    marked = [
        f"| {arm} | "
        + " | ".join(
            f"{_share(m['marker_rate'])} / {_share(m['correct_with_marker'])} / {_share(m['correct_without_marker'])}"
            for m in (row["markers_by_task"][t] for t in summary["id_tasks"] + summary["ood_tasks"])
        )
        + " |"
        for arm, row in summary["arms"].items()
        if any(m["marker_rate"] for m in row["markers_by_task"].values())
    ]
    markers = (
        [
            "The marker at test time, per task (items pooled over seeds): share of solutions that write it / exact "
            "match of those that do / of those that do not:",
            "",
            per_task[0],
            per_task[1],
            *marked,
            "",
        ]
        if marked
        else []
    )
    tokens = [
        "| arm | optimizer steps | token slots (steps × batch × seq_len) | non-padding tokens per seed "
        "| train + eval time |",
        "|---|---|---|---|---|",
    ]
    for arm, row in summary["arms"].items():
        tokens.append(
            f"| {arm} | {sorted(set(row['steps']))} | {sorted(set(row['token_slots']))} "
            f"| {', '.join(f'{t:,}' for t in row['tokens'])} | {row['seconds'] / 60:.1f} min |"
        )
    controlled = [
        f"| {arm} − {row['control']} | {_interval(row['id_vs_control'])} | {_interval(row['ood_vs_control'])} "
        f"| {_interval(row.get('headroom_vs_control'))} |"
        for arm, row in summary["arms"].items()
        if "control" in row
    ]
    controls = (
        [
            "Against its control (the same paired bootstrap):",
            "",
            "| comparison | ID [95% CI] | OOD [95% CI] | OOD with headroom [95% CI] |",
            "|---|---|---|---|",
            *controlled,
            "",
        ]
        if controlled
        else []
    )
    sweep = ["| learning rate | baseline dev exact match (seed 0) | train time |", "|---|---|---|"]
    if not summary["sweep"]:
        sweep = [f"No sweep: every arm at the base recipe's learning rate, {summary['learning_rate']:g}."]
    sweep += [
        f"| {lr:g}{' (chosen)' if lr == summary['sweep_choice'] else ''} | {100 * v['dev']:.1f}% "
        f"| {v['train_seconds'] / 60:.1f} min |"
        for lr, v in sorted(summary["sweep"].items())
    ]
    given_lr = (
        ""
        if summary["learning_rate"] == summary["sweep_choice"]
        else f" (given with --learning_rate; the sweep chooses {summary['sweep_choice']:g})"
    )
    gate_text = _gate_text(summary["gate"], "baseline")
    gate_text += "".join(
        f"\n- {arm}: {_gate_text(gate, arm)}" for arm, gate in summary.get("architecture_gates", {}).items()
    )
    return "\n".join(
        [
            f"Reproduce: `{command}`. {summary['runs']} runs, {summary['total_seconds'] / 60:.1f} min of training and "
            f"evaluation. Learning rate {summary['learning_rate']:g} for every arm{given_lr}. Training range: "
            f"{', '.join(f'{k} ≤ {v}' for k, v in summary['training_tops'].items())}; "
            f"in-distribution (ID) test tasks: {', '.join(summary['id_tasks'])}; "
            f"out-of-distribution (OOD): {', '.join(summary['ood_tasks']) or '–'}; OOD with headroom (the baseline's "
            f"dev accuracy within {100 * HEADROOM[0]:.0f}-{100 * HEADROOM[1]:.0f}%, chosen on dev): "
            f"{', '.join(summary.get('headroom_tasks', [])) or '–'}.",
            "",
            f"Precision and machine of the runs: {'; '.join(summary.get('machines', [])) or '–'}.",
            "",
            f"**Learnability gate**: {gate_text}",
            "",
            "Exact match in %, mean ± std over seeds, on the full test sets of the saved checkpoints; the interval is "
            "a paired bootstrap over test items. Tokens to target: non-padding tokens until the in-loop ID accuracy "
            f"reaches {100 * summary['target']:.0f}%. Marker rate (test): share of generated test solutions that "
            "write the BACK marker.",
            "",
            *lines,
            "",
            *controls,
            "Per task:",
            "",
            *per_task,
            "",
            "Per seed:",
            "",
            *per_seed,
            "",
            *markers,
            "Budget per arm:",
            "",
            *tokens,
            "",
            "Baseline learning-rate sweep (chosen on the dev sets, never on test):"
            if summary["sweep"]
            else "Learning rate:",
            "",
            *sweep,
            "",
        ]
    )


def write_report(
    config, base: dict, records: list[dict], report_dir: Path, command: str, learning_rate: float | None = None
) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(config, base, records, learning_rate)
    (report_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    plots = [
        plot_arms_by_difficulty(summary, report_dir / "ablation-accuracy-by-difficulty.png"),
        plot_learning_curves(summary, report_dir / "ablation-learning-curves.png"),
        plot_curves_by_task(summary, report_dir / "ablation-curves-by-task.png"),
        plot_loss_curves(summary, report_dir / "ablation-loss-curves.png"),
    ]
    body = markdown(summary, command)
    images = "".join(f"\n![{p.stem}]({p.name})\n" for p in plots if p is not None)
    path = report_dir / "results.md"
    path.write_text("# Ablation results\n\n" + body + images)
    return path
