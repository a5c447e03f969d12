"""Choices an experiment makes from its runs: always on the dev sets (training templates), never on test.

A learning-rate sweep chooses the rate of every arm; a selection (`select:` in an ablation recipe) chooses the
best of several arms, which other arms may then start from. Ties go to the first listed. The runner and the
report both decide through these functions, so they always agree.
"""

from __future__ import annotations


def dev_score(record: dict) -> float:
    """Mean exact match over every dev item of a run (in- and out-of-distribution buckets alike)."""
    items = [c for task in record["dev"].values() for c in task["correct"]]
    return sum(items) / max(1, len(items))


def sweep_runs(config, records: list[dict]) -> list[dict]:
    """The learning-rate sweep's completed runs (baseline, first seed), in the recipe's order."""
    return [
        r
        for lr in config.learning_rates
        for r in records
        if r["arm"] == "baseline" and r["seed"] == config.seeds[0] and r["learning_rate"] == lr
    ]


def chosen_learning_rate(config, records: list[dict], base_lr: float) -> float:
    """The best sweep run's learning rate on the dev sets (ties: the first listed), once the whole sweep has
    run; until then (or with no sweep, as in --quick) the base recipe's."""
    runs = sweep_runs(config, records)
    if not config.learning_rates or len(runs) < len(config.learning_rates):
        return base_lr
    return max(runs, key=dev_score)["learning_rate"]


def selection_choices(config, records: list[dict], learning_rate: float) -> dict[str, tuple[str, dict]]:
    """Each selection whose candidate arms have all run with every seed at `learning_rate`: the arm it chooses,
    the best mean dev score (ties: the first listed), and every candidate's score."""
    records = [r for r in records if r["learning_rate"] == learning_rate]
    decided = {}
    for selection, candidates in config.select.items():
        dev = {}
        for arm in candidates:
            runs = [r for r in records if r["arm"] == arm and r["seed"] in config.seeds]
            if len(runs) < len(config.seeds):
                break
            dev[arm] = sum(map(dev_score, runs)) / len(runs)
        else:
            decided[selection] = (max(dev, key=dev.get), dev)
    return decided
