"""The ending of a training run: per task family, the held-out scores before training and after it, in and out of
distribution, beside the levels a model reaches without reasoning, and what the self-correction tasks measured.

"Before" is the first in-loop evaluation (step 0, the untrained model: read from the Trainer's log history, so a
resumed run states it too), on `eval.limit` items per task; "after" is the final evaluation, on `eval.final_limit`.
Two reference levels sit beside every row: *most common answer* (always giving the most common gold answer of the
items run, what a model that learned only the answer distribution scores) and, where every prompt names its
candidates ("Which holds, kap or bib?"), *chance* (guessing uniformly among them). A family learned to reason where
"after" clears both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .evaluation import accuracy_by_difficulty
from .model_card import leaf_names, result_rows

Z_95 = 1.96  # a 95% interval from lm-eval's standard error


@dataclass(frozen=True)
class FamilyRow:
    family: str
    split: str  # "ID" or "OOD"
    before: float | None
    after: float
    half_width: float | None  # of the 95% interval around `after`
    items: int | None
    most_common: float | None
    chance: float | None


@dataclass(frozen=True)
class SelfCorrectionRow:
    family: str
    marker: tuple[float | None, float]  # marker after a planted mistake: before, after
    false_marker: tuple[float | None, float]  # marker after a correct step start: before, after
    items: int | None


def initial_scores(log_history: list[dict]) -> dict[str, float]:
    """The step-0 evaluation's scores, {"<task or group>/<metric>": value}; empty when the run did not evaluate
    before its first step."""
    for entry in log_history:
        if entry.get("step") == 0 and any(key.startswith("eval/") for key in entry):
            return {key.removeprefix("eval/"): value for key, value in entry.items() if key.startswith("eval/")}
    return {}


def candidate_chance(results: dict, group: str) -> float | None:
    """The accuracy of guessing uniformly among the answers each prompt names, over the items of `group`'s tasks;
    None unless every item names its candidates."""
    leaves = leaf_names(group, results.get("group_subtasks", {}))
    docs = [
        sample["doc"]
        for leaf in leaves
        for sample in results.get("samples", {}).get(leaf, [])
        if sample.get("filter") == "extract_answer"
    ]
    if not docs or any(not doc.get("answer_candidates") for doc in docs):
        return None
    return sum(1 / len(doc["answer_candidates"]) for doc in docs) / len(docs)


def family_rows(results: dict, before: dict[str, float]) -> list[FamilyRow]:
    """One row per family and split, for every `cogfm_<family>_id` / `_ood` group the final evaluation ran."""
    groups = {row["name"]: row for row in result_rows(results) if row["group"] and row["metric"] == "exact_match"}
    rows = []
    for name in groups:
        if not (name.startswith("cogfm_") and name.endswith("_id")):
            continue
        family = name.removeprefix("cogfm_").removesuffix("_id")
        for split, group in (("ID", name), ("OOD", f"cogfm_{family}_ood")):
            if group not in groups:
                continue
            row = groups[group]
            rows.append(
                FamilyRow(
                    family=family,
                    split=split,
                    before=before.get(f"{group}/exact_match"),
                    after=row["value"],
                    half_width=Z_95 * row["stderr"] if row["stderr"] is not None else None,
                    items=row["items"],
                    most_common=row["baseline"],
                    chance=candidate_chance(results, group),
                )
            )
    return rows


def self_correction_rows(results: dict, before: dict[str, float]) -> list[SelfCorrectionRow]:
    rows = []
    for name, values in results.get("results", {}).items():
        if not (name.startswith("cogfm_") and name.endswith("_self_correction")) or name in results.get("groups", {}):
            continue
        rows.append(
            SelfCorrectionRow(
                family=name.removeprefix("cogfm_").removesuffix("_self_correction"),
                marker=(before.get(f"{name}/marker_rate"), values["marker_rate,none"]),
                false_marker=(before.get(f"{name}/false_marker_rate"), values["false_marker_rate,none"]),
                items=results.get("n-samples", {}).get(name, {}).get("effective"),
            )
        )
    return rows


def _percent(value: float | None) -> str:
    """A rate in % ("" when there is none; "n/a" when no item of its kind was run, e.g. no planted mistake)."""
    if value is None:
        return ""
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _before_after(before: float | None, after: float, half_width: float | None = None) -> str:
    interval = f" ± {100 * half_width:.1f}" if half_width is not None and math.isfinite(half_width) else ""
    return f"{_percent(before) or '?'} → {_percent(after)}{interval}"


def by_difficulty_lines(results: dict, training_top: dict[str, int]) -> list[str]:
    """Per family, the final exact match at each difficulty run, the trained range before the bar."""
    lines = []
    for task, by_difficulty in accuracy_by_difficulty(results).items():
        top = training_top.get(task)
        cells = []
        for difficulty, value in sorted(by_difficulty.items()):
            if top is not None and difficulty > top and (not cells or "|" not in cells):
                cells.append("|")
            cells.append(f"{difficulty}: {100 * value:.0f}")
        lines.append(f"{task} by difficulty (trained up to {top if top is not None else '?'}): {' '.join(cells)}")
    return lines


def markdown_table(families: list[FamilyRow], corrections: list[SelfCorrectionRow]) -> str:
    lines = [
        "| family | split | exact match % before → after (± 95%) | items | most common answer % | chance % |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in families:
        lines.append(
            f"| {row.family} | {row.split} | {_before_after(row.before, row.after, row.half_width)} | "
            f"{row.items or ''} | {_percent(row.most_common)} | {_percent(row.chance)} |"
        )
    if corrections:
        lines += [
            "",
            "| self-correction | marker after a planted mistake % | marker after a correct step start (false) % | "
            "items |",
            "|---|---|---|---:|",
        ]
        lines += [
            f"| {row.family} | {_before_after(*row.marker)} | {_before_after(*row.false_marker)} | {row.items or ''} |"
            for row in corrections
        ]
    return "\n".join(lines)


def console_table(families: list[FamilyRow], corrections: list[SelfCorrectionRow]) -> str:
    header = (
        f"{'family':<14} {'split':<5} {'before → after (± 95%)':<26} {'items':>6} {'most common':>12} {'chance':>7}"
    )
    lines = [header]
    for row in families:
        lines.append(
            f"{row.family:<14} {row.split:<5} {_before_after(row.before, row.after, row.half_width):<26} "
            f"{row.items or '':>6} {_percent(row.most_common):>12} {_percent(row.chance):>7}"
        )
    if corrections:
        lines.append(
            f"{'self-correction':<14} {'marker after a planted mistake':<32} {'after a correct step (false)':<28}"
        )
        lines += [
            f"{row.family:<14} {_before_after(*row.marker):<32} {_before_after(*row.false_marker):<28}"
            for row in corrections
        ]
    return "\n".join(lines)
