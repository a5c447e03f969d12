"""The ablation of curriculum and self-correction against a plain baseline (`training/ablate.py`).

An ablation recipe (training/recipes/ablation.yaml) names a base training recipe — the baseline — and
arms that change only what they study: retry data (`retry_p`, `retry_variant`, applied to every task in
the data mixture; `retry_model` for the model-drawn variant), the loss on mistakes (`loss`), the data order
(`curriculum`), the learning-rate schedule and final weight averaging (`schedule`, `averaging`), the format
(`tasks`, `position_coupling`), a task's knobs (`knobs`, e.g. how many distinct rules rule induction trains on;
training/recipes/rules.yaml) and the architecture (`model`: CogFMConfig fields over the base's model overrides,
e.g. `layer_types` or `canon_set`; training/recipes/mixers-*.yaml). An arm may start from another arm or from a
selection (`like: [best_retry]`), the best of a set of arms on the dev sets.

The run, in order; every step is skipped when its output exists, so the runner resumes after a crash and
a large set runs in parts (`--arms`, `--seeds`):

1. one tokenizer for every arm, trained on the baseline's data;
2. the learning-rate sweep of the baseline (seed 0), chosen on the dev sets; every arm then uses it
   (`--learning_rate` sets it instead: a set made before the sweep changed is re-run or re-reported so);
3. each arm and seed: its data (arms with the same data share a build), a training run of the resolved
   recipe in its own process (cogfm_hf.experiments.runs; all arms: same model, schedule, steps, batch and
   sequence length, so the same token budget), then the lm-eval test and dev tasks on the saved checkpoint;
4. the report (cogfm_hf.experiments.ablation_report): table, intervals, plots.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from ..config import RecipeError, apply_overrides, parse_overrides
from ..console import exit_with
from ..training.recipe import TrainRecipe
from .ablation_report import write_report
from .arms import (
    AblationConfig,
    arm_recipe,
    filed_under_recipe_names,
    load_ablation,
    merged_changes,
    renamed_task,
    run_name,
)
from .runs import (
    RUN_LOG,
    completed_records,
    evaluate_checkpoint,
    learning_curve,
    loss_curve,
    read_record,
    shared_tokenizer,
    train_run,
    write_record,
)
from .selection import chosen_learning_rate, dev_score, selection_choices


class Ablation:
    def __init__(self, config: AblationConfig, base: dict, overrides: list[str], output_dir: Path):
        self.config = config
        self.base = apply_overrides(base, parse_overrides(overrides), TrainRecipe.override_key)
        try:
            TrainRecipe.from_dict(self.base)
        except RecipeError as error:
            raise RecipeError(f"the base recipe with the command line's overrides: {error}") from None
        self.output_dir = output_dir
        self.runs_dir, self.data_root = output_dir / "runs", output_dir / "data"
        self.tokenizer_dir = output_dir / "tokenizer"
        self.log_path = output_dir / "ablation_log.jsonl"

    def log(self, **event):
        event = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **event}
        print(f"[ablation] {json.dumps(event)}", flush=True)
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(event) + "\n")

    def shared_tokenizer(self) -> None:
        """Train the tokenizer once, on the baseline's data, so every arm tokenises alike."""
        if shared_tokenizer(self.base["data"], self.output_dir, self.tokenizer_dir):
            self.log(event="tokenizer", path=str(self.tokenizer_dir))

    def run(self, arm: str, changes: dict, seed: int, learning_rate: float) -> dict:
        """Train and evaluate one run (or read its record if it is complete)."""
        run_dir = self.runs_dir / run_name(arm, learning_rate, seed)
        record = read_record(run_dir)
        if record is not None:
            return record
        if run_dir.exists():  # an interrupted run: start it again from scratch
            shutil.rmtree(run_dir)
        retry_model_dir = None
        if "retry_model" in changes:
            retry_model_dir = self.runs_dir / run_name(changes["retry_model"], learning_rate, seed)
            if read_record(retry_model_dir) is None:
                raise RuntimeError(
                    f"{arm} (seed {seed}) writes the mistakes of {changes['retry_model']}'s model, whose run "
                    f"{retry_model_dir} is not complete: run that arm with this seed first"
                )
        run_dir.mkdir(parents=True)
        recipe = arm_recipe(
            self.base,
            changes,
            seed=seed,
            learning_rate=learning_rate,
            run_dir=run_dir,
            data_root=self.data_root,
            tokenizer_dir=self.tokenizer_dir,
            retry_model_dir=retry_model_dir,
        )
        self.log(
            event="start",
            run=run_dir.name,
            arm=arm,
            seed=seed,
            learning_rate=learning_rate,
            changes=changes,
            progress=str(run_dir / RUN_LOG),
        )
        train_seconds = train_run(recipe, run_dir)
        start = time.perf_counter()
        tasks = changes.get("tasks", {})
        recipe_tasks = self.config.test_tasks + self.config.self_correction_tasks
        evaluation = evaluate_checkpoint(
            run_dir,
            [renamed_task(task, tasks) for task in recipe_tasks],
            [renamed_task(task, tasks) for task in self.config.dev_tasks],
            self.config.test_limit,
            self.config.eval_batch_size,
        )
        recipe_name = {renamed_task(task, tasks): task for task in recipe_tasks + self.config.dev_tasks}
        evaluation = filed_under_recipe_names(evaluation, recipe_name, tasks)
        summary = json.loads((run_dir / "training_summary.json").read_text())
        state = json.loads((run_dir / "trainer_state.json").read_text())
        training = recipe["training"]
        record = {
            "arm": arm,
            "seed": seed,
            "learning_rate": learning_rate,
            "changes": changes,
            "run": run_dir.name,
            "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(time.perf_counter() - start, 1),
            "global_step": summary["global_step"],
            "precision": summary["precision"],
            "device": summary["device"],
            "num_input_tokens_seen": summary["num_input_tokens_seen"],
            "token_slots": summary["global_step"]
            * training["per_device_train_batch_size"]
            * training.get("gradient_accumulation_steps", 1)
            * recipe["data"]["pack"]["seq_len"],
            "curve": [  # in-loop tasks too, under the recipe's names
                {**point, "exact_match": {recipe_name.get(t, t): v for t, v in point["exact_match"].items()}}
                for point in learning_curve(state["log_history"])
            ],
            "loss_curve": loss_curve(state["log_history"]),
            **evaluation,
        }
        write_record(run_dir, record)
        self.log(
            event="done",
            run=run_dir.name,
            train_seconds=record["train_seconds"],
            eval_seconds=record["eval_seconds"],
            tokens=record["num_input_tokens_seen"],
        )
        return record


def execute(
    config: AblationConfig,
    ablation: Ablation,
    arms: list[str],
    seeds: list[int],
    sweep: bool,
    learning_rate: float | None = None,
) -> dict:
    """Run the arms at `learning_rate`, or (None) at the sweep's choice after running the sweep."""
    started = time.perf_counter()
    ablation.output_dir.mkdir(parents=True, exist_ok=True)
    ablation.shared_tokenizer()
    records: list[dict] = []
    if learning_rate is not None:
        ablation.log(event="learning_rate", given=learning_rate)
    else:
        if sweep:
            records += [ablation.run("baseline", {}, config.seeds[0], lr) for lr in config.learning_rates]
        learning_rate = chosen_learning_rate(config, records, float(ablation.base["training"]["learning_rate"]))
        if records:
            ablation.log(
                event="learning_rate",
                chosen=learning_rate,
                dev={r["learning_rate"]: round(dev_score(r), 4) for r in records},
            )
    choices: dict[str, str] = {}
    waiting: list[str] = []
    for arm in arms:
        decide_selections(config, ablation, choices, learning_rate)
        try:
            changes = merged_changes(config, arm, choices)
        except KeyError:
            waiting.append(arm)
            continue
        for seed in seeds:
            if "retry_model" in changes:  # its mistakes come from that arm's model of the same seed
                source = changes["retry_model"]
                records.append(ablation.run(source, merged_changes(config, source, choices), seed, learning_rate))
            records.append(ablation.run(arm, changes, seed, learning_rate))
    decide_selections(config, ablation, choices, learning_rate)
    if waiting:
        ablation.log(
            event="waiting",
            arms=waiting,
            why="a selection they start from has arms that have not run with every seed yet: run those first",
        )
    return {
        "records": records,
        "learning_rate": learning_rate,
        "choices": choices,
        "waiting": waiting,
        "seconds": time.perf_counter() - started,
    }


def decide_selections(
    config: AblationConfig, ablation: Ablation, choices: dict[str, str], learning_rate: float
) -> None:
    """Choose each selection that can be decided and is not yet. Decided from the completed runs on disk, so
    a set run in parts decides the same way."""
    records = completed_records(ablation.runs_dir)
    for selection, (chosen, dev) in selection_choices(config, records, learning_rate).items():
        if selection not in choices:
            choices[selection] = chosen
            ablation.log(
                event="selection",
                name=selection,
                chosen=choices[selection],
                dev={a: round(v, 4) for a, v in dev.items()},
            )


def main(argv: list[str] | None = None, default_recipe: str | Path | None = None) -> None:
    """The ablation's command line; `training/ablate.py` passes the default recipe (training/recipes/ablation.yaml)."""
    parser = argparse.ArgumentParser(
        prog="training/ablate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", nargs="?" if default_recipe else None, default=default_recipe)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--quick", action="store_true", help="the recipe's reduced set (fewer arms, one seed)")
    scope.add_argument("--core", action="store_true", help="the core comparison only")
    scope.add_argument("--arms", help="comma-separated arms to run (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the recipe's)")
    parser.add_argument("--output_dir", help="override the recipe's output_dir (and report_dir)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the completed runs")
    parser.add_argument(
        "--learning_rate",
        type=float,
        help="run and report every arm at this learning rate, not the sweep's choice (no sweep); "
        "the report goes to <report_dir>/lr<LR>",
    )
    args, overrides = parser.parse_known_args(argv)
    try:
        config, base = load_ablation(args.recipe)
        arms, seeds = list(config.arms), config.seeds
        output_dir, report_dir = config.output_dir, config.report_dir
        if args.quick:
            if config.quick is None:
                raise RecipeError("no `quick:` section", "quick").in_file(args.recipe)
            arms, seeds = config.quick.arms, config.quick.seeds
            output_dir, report_dir = config.quick.output_dir, config.quick.report_dir
        elif args.core:
            arms = config.core
        elif args.arms:
            arms = [a.strip() for a in args.arms.split(",") if a.strip()]
            unknown = [a for a in arms if a not in config.arms]
            if unknown:
                raise RecipeError(f"--arms: unknown arm(s) {unknown}; the recipe has {sorted(config.arms)}")
        if args.seeds:
            seeds = [int(s) for s in args.seeds.split(",")]
        if args.output_dir:
            output_dir, report_dir = args.output_dir, None
        output_dir = Path(output_dir)
        report_dir = Path(report_dir) if report_dir else output_dir
        if args.learning_rate is not None:
            report_dir = report_dir / f"lr{args.learning_rate:g}"
        ablation = Ablation(config, base, overrides, output_dir)
    except RecipeError as error:
        exit_with("recipe error", error)
    if not args.report_only:
        outcome = execute(config, ablation, arms, seeds, sweep=not args.quick, learning_rate=args.learning_rate)
        ablation.log(
            event="finished",
            seconds=round(outcome["seconds"], 1),
            runs=len(outcome["records"]),
            waiting=outcome["waiting"],
        )
    # The command that produces these runs (the report alone is rewritten by adding --report-only).
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python training/ablate.py", *(a for a in given if a != "--report-only")])
    records = completed_records(ablation.runs_dir)
    if args.learning_rate is not None and not any(r["learning_rate"] == args.learning_rate for r in records):
        sys.exit(
            f"--learning_rate {args.learning_rate:g}: no completed run in {ablation.runs_dir} has this learning "
            f"rate (they have {sorted({r['learning_rate'] for r in records})})"
        )
    report = write_report(config, ablation.base, records, report_dir, command, learning_rate=args.learning_rate)
    print(f"report: {report}", flush=True)
