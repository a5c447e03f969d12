"""The scaling ladder (`training/ladder.py`; docs/scaling.md): a few small runs of one recipe, the law they fit, and a
checked forecast of a size held out of the fit.

A ladder recipe (training/recipes/ladder.yaml) names a base training recipe (its data mixture is the one the law is
about), the sizes (a number of layers each; the shape rule gives the rest) and the token budgets. In order, every step
skipped when its output exists, so the ladder resumes after a crash and runs in parts (`--sizes`, `--stage`):

1. one tokenizer for every run, trained on the base recipe's data;
2. the sweep: at two sizes, every learning rate x batch size of `sweep`, trained to `sweep.tokens` with the same
   warmup-stable-decay schedule, chosen by held-out loss (never a test set). The rule for every size: the chosen
   learning rate and batch size as a power of the non-embedding parameters through the two sizes' choices, clipped to
   the swept range (two sizes do not license extrapolating a trend beyond what was swept);
3. the ladder: each size (and seed) trained once to the largest budget under warmup-stable-decay (the trunk), saving
   its stable-phase weights where each smaller budget's cooldown starts; each smaller budget is a cooldown branched
   from there (Hägele et al. 2024, arXiv 2405.18392): a run resumed from that checkpoint with the budget's steps and
   decay, which trains exactly as a run made for that budget would (tests/test_ladder.py holds them equal). A run
   the sweep made already (same size, seed, rate, batch, budget) is that point, not trained twice;
4. the report (cogfm_hf.experiments.ladder_report): the law fitted on all sizes but the held-out largest, its
   bootstrap intervals over runs, the forecast of the held-out size against what it reached, plots.

Each point is a run's final evaluation (cogfm_hf.training.heldout, lm-eval): the loss on held-out packed sequences of
the build, per task, and greedy exact match on the test sets. FLOPs per token count attention and the output layer
(cogfm_hf.presets.train_flops_per_token).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from ..config import Config, RecipeError
from ..console import exit_with
from ..modeling.configuration_cogfm import CogFMConfig
from ..modeling.modeling_cogfm import CogFMForCausalLM
from ..presets import count_parameters, train_flops_per_token
from ..training.recipe import TrainRecipe
from .runs import RUN_LOG, data_key, read_record, shared_tokenizer, train_run, write_record


@dataclass
class ShapeRule(Config):
    """A size's shape from its depth: width = aspect_ratio x layers, heads of head_dim (as many key/value heads as
    query heads), MLP ffn_ratio x width. One ratio for every size keeps the ladder a one-parameter family."""

    section: ClassVar[str] = "shape"

    aspect_ratio: int = 32  # hidden size per layer
    head_dim: int = 32
    ffn_ratio: int = 3

    def validate(self) -> None:
        if self.head_dim < 2 or self.head_dim % 2:
            raise self.invalid("head_dim", f"must be even (RoPE) and >= 2, got {self.head_dim}")
        if self.aspect_ratio % self.head_dim:
            raise self.invalid(
                "aspect_ratio", f"must be a multiple of head_dim {self.head_dim}, got {self.aspect_ratio}"
            )
        if self.ffn_ratio < 1:
            raise self.invalid("ffn_ratio", f"must be >= 1, got {self.ffn_ratio}")

    def overrides(self, layers: int) -> dict[str, int]:
        hidden = self.aspect_ratio * layers
        heads = hidden // self.head_dim
        return dict(
            hidden_size=hidden,
            intermediate_size=self.ffn_ratio * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=self.head_dim,
        )


@dataclass
class SweepConfig(Config):
    section: ClassVar[str] = "sweep"

    sizes: list[int]  # the two sizes (layers) swept
    learning_rates: list[float]
    batch_sizes: list[int]
    tokens: float  # each sweep run's budget; a ladder budget, so the chosen run is also that point of the ladder

    def validate(self) -> None:
        if len(self.sizes) != 2 or self.sizes[0] == self.sizes[1]:
            raise self.invalid("sizes", f"give two different sizes (layers), got {self.sizes}")
        if not self.learning_rates or not self.batch_sizes:
            raise self.invalid("", "give at least one learning rate and one batch size")


@dataclass
class ForecastConfig(Config):
    section: ClassVar[str] = "forecast"

    # The family whose in-distribution exact match is forecast (its `cogfm_<family>_id` group among the evaluated
    # tasks), from its documents' held-out loss (the first step's target)
    family: str

    def validate(self) -> None:
        from ..data.pack import TASK_VOCAB

        if self.family not in TASK_VOCAB[1:]:
            raise self.invalid("family", f"must be one of {TASK_VOCAB[1:]}, got {self.family!r}")

    @property
    def group(self) -> str:
        return f"cogfm_{self.family}_id"


@dataclass
class LadderConfig(Config):
    section: ClassVar[str] = "ladder"

    base: str  # the training recipe (relative to this file's folder): data, sequence length, optimizer
    sizes: list[int]  # layers of each size, smallest first; the last `holdout` are forecast, not fitted
    budgets: list[float]  # tokens; the trunk trains to the largest, each smaller is a branched cooldown
    sweep: SweepConfig
    forecast: ForecastConfig
    shape: ShapeRule = field(default_factory=ShapeRule)
    # Over the base recipe, for every run (sections merge key by key): the schedule, the evaluation, the hold-out
    changes: dict[str, Any] = field(default_factory=dict)
    cooldown_fraction: float = 0.2  # of each budget's steps: the decay to zero (Hägele et al.: 20% matches cosine)
    seeds: list[int] = field(default_factory=lambda: [0])
    noise_seeds: list[int] = field(default_factory=lambda: [1])  # more seeds at the two smallest sizes
    holdout: int = 1
    bootstrap: int = 200  # resamplings of runs for the intervals
    output_dir: str = "outputs/ladder"
    report: str = "docs/scaling.md"  # the plots go to a folder beside it, named as it is without `.md`
    quick: dict[str, Any] = field(default_factory=dict)  # this section's fields that `--quick` replaces

    def validate(self) -> None:
        if sorted(self.sizes) != self.sizes or len(set(self.sizes)) != len(self.sizes):
            raise self.invalid("sizes", f"give distinct sizes (layers), smallest first, got {self.sizes}")
        if len(self.sizes) - self.holdout < 3:
            raise self.invalid(
                "holdout", f"leaves {len(self.sizes) - self.holdout} sizes to fit; the law needs at least 3"
            )
        if not set(self.sweep.sizes) <= set(self.sizes):
            raise self.invalid("sweep.sizes", f"{self.sweep.sizes} must be among the sizes {self.sizes}")
        budgets = sorted(self.budgets)
        if budgets != self.budgets or budgets[0] <= 0:
            raise self.invalid("budgets", f"give positive token budgets, smallest first, got {self.budgets}")
        if any(b / budgets[0] != round(b / budgets[0]) for b in budgets):
            raise self.invalid(
                "budgets",
                f"each must be a whole multiple of the smallest (so every branch is a saved step): {budgets}",
            )
        if self.sweep.tokens not in budgets:
            raise self.invalid("sweep.tokens", f"must be one of the budgets {budgets}, got {self.sweep.tokens}")
        if not 0 < self.cooldown_fraction < 1:
            raise self.invalid("cooldown_fraction", f"must be in (0, 1), got {self.cooldown_fraction}")
        if set(self.seeds) & set(self.noise_seeds):
            raise self.invalid("noise_seeds", f"must differ from seeds {self.seeds}")
        unknown = sorted(set(self.quick) - {f for f in self.__dataclass_fields__ if f != "quick"})
        if unknown:
            raise self.invalid("quick", f"unknown field(s) {unknown}")


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` merged in: mappings key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_ladder(path: str | Path, quick: bool = False) -> tuple[LadderConfig, dict]:
    """The ladder config (with its `quick` fields in place when asked) and the base recipe with the ladder's changes,
    both checked before anything runs."""
    path = Path(path)
    values = yaml.safe_load(path.read_text()) or {}
    if quick:
        if not values.get("quick"):
            raise RecipeError("no `quick:` section", "quick").in_file(path)
        values = merged(values, values["quick"])
    try:
        config = LadderConfig.from_dict(values)
    except RecipeError as error:
        raise error.in_file(path) from None
    base_path = path.parent / config.base
    if not base_path.is_file():
        raise RecipeError(f"{base_path} does not exist", "base").in_file(path)
    base = merged(yaml.safe_load(base_path.read_text()) or {}, config.changes)
    try:
        recipe = TrainRecipe.from_dict(base)
    except RecipeError as error:
        raise RecipeError(f"the base recipe {base_path} with the ladder's changes: {error}") from None
    if recipe.eval.heldout_sequences < 1 or not recipe.eval.enabled:
        raise RecipeError("every point is a held-out loss: set eval.heldout_sequences >= 1", "changes.eval").in_file(
            path
        )
    if not {config.forecast.group, f"cogfm_{config.forecast.family}"} & set(recipe.eval.tasks):
        raise RecipeError(
            f"evaluate {config.forecast.group} (or cogfm_{config.forecast.family}): the evaluated tasks are "
            f"{recipe.eval.tasks}",
            "forecast.family",
        ).in_file(path)
    if recipe.training.get("lr_scheduler_type") != "warmup_stable_decay":
        raise RecipeError(
            "cooldowns branch from a stable phase: set training.lr_scheduler_type warmup_stable_decay",
            "changes.training",
        ).in_file(path)
    return config, base


def model_config(base: dict, shape: ShapeRule, layers: int, vocab_size: int) -> CogFMConfig:
    model = base.get("model") or {}
    overrides = {**(model.get("overrides") or {}), **shape.overrides(layers), "vocab_size": vocab_size}
    return CogFMConfig.from_preset(model.get("preset", "cogfm-tiny"), **overrides)


def non_embedding_parameters(config: CogFMConfig) -> int:
    """Parameters outside the token embedding and the output head (Kaplan et al.'s N), on the meta device."""
    with torch.device("meta"):
        model = CogFMForCausalLM(config)
    return sum(p.numel() for p in model.model.layers.parameters()) + sum(
        p.numel() for p in model.model.norm.parameters()
    )


@dataclass(frozen=True)
class Plan:
    """One (size, seed, learning rate, batch) trained to `budgets`: the trunk to the last, branches for the rest."""

    layers: int
    seed: int
    learning_rate: float
    batch_size: int
    budgets: tuple[float, ...]

    def name(self, budget: float) -> str:
        return f"L{self.layers}-lr{self.learning_rate:g}-b{self.batch_size}-seed{self.seed}-{budget / 1e6:g}M"


class Ladder:
    def __init__(self, config: LadderConfig, base: dict, output_dir: Path):
        self.config, self.base = config, base
        self.output_dir = output_dir
        self.runs_dir, self.data_root = output_dir / "runs", output_dir / "data"
        self.tokenizer_dir = output_dir / "tokenizer"
        self.log_path = output_dir / "ladder_log.jsonl"
        self.seq_len = TrainRecipe.from_dict(base).data.pack.seq_len

    def log(self, **event):
        event = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **event}
        print(f"[ladder] {json.dumps(event)}", flush=True)
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(event) + "\n")

    def vocab_size(self) -> int:
        return len(json.loads((self.tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])

    def steps(self, budget: float, batch_size: int) -> tuple[int, int]:
        """(steps, cooldown steps) of a budget: the smallest budget's steps a multiple of the cooldown's share, so
        every budget's cooldown starts at a whole step the trunk saves."""
        unit = round(1 / self.config.cooldown_fraction) if (1 / self.config.cooldown_fraction).is_integer() else 1
        smallest = max(unit, unit * round(self.config.budgets[0] / (batch_size * self.seq_len * unit)))
        steps = smallest * round(budget / self.config.budgets[0])
        return steps, round(self.config.cooldown_fraction * steps)

    def recipe(self, plan: Plan, budget: float, run_dir: Path, save_steps: int | None, resume: Path | None) -> dict:
        recipe = copy.deepcopy(self.base)
        model = recipe.setdefault("model", {})
        model["overrides"] = {**(model.get("overrides") or {}), **self.config.shape.overrides(plan.layers)}
        steps, cooldown = self.steps(budget, plan.batch_size)
        training = recipe["training"]
        kwargs = {**(training.get("lr_scheduler_kwargs") or {}), "num_decay_steps": cooldown}
        recipe["training"] = {
            **training,
            "output_dir": str(run_dir),
            "seed": plan.seed,
            "learning_rate": plan.learning_rate,
            "per_device_train_batch_size": plan.batch_size,
            "gradient_accumulation_steps": 1,
            "max_steps": steps,
            "lr_scheduler_kwargs": kwargs,
            "save_steps": save_steps or steps,
            "save_total_limit": None,
        }
        if resume is not None:
            recipe["training"]["resume_from_checkpoint"] = str(resume)
        recipe["data"]["tokenizer"] = {**recipe["data"].get("tokenizer", {}), "path": str(self.tokenizer_dir)}
        recipe["data"]["output_dir"] = str(self.data_root / data_key(recipe["data"]))
        return recipe

    def train(self, plan: Plan) -> list[dict]:
        """The plan's points, trained or read: the trunk first (unless every branch point exists), then each branch
        from the trunk's checkpoint where its cooldown starts. The trunk's checkpoints go once every branch is done."""
        records = {b: read_record(self.runs_dir / plan.name(b)) for b in plan.budgets}
        trunk_budget = plan.budgets[-1]
        trunk_dir = self.runs_dir / plan.name(trunk_budget)
        starts = {b: self.steps(b, plan.batch_size)[0] - self.steps(b, plan.batch_size)[1] for b in plan.budgets[:-1]}
        missing_branches = [b for b in plan.budgets[:-1] if records[b] is None]
        if records[trunk_budget] is None or any(
            not (trunk_dir / f"checkpoint-{starts[b]}").is_dir() for b in missing_branches
        ):
            if records[trunk_budget] is not None:  # done, but its checkpoints are gone: train it again
                self.log(event="retrain", run=trunk_dir.name, why="branches need its checkpoints")
            save_steps = math.gcd(*starts.values()) if starts else None
            records[trunk_budget] = self.run(plan, trunk_budget, trunk_dir, save_steps, None)
        for budget in missing_branches:
            run_dir = self.runs_dir / plan.name(budget)
            records[budget] = self.run(plan, budget, run_dir, None, trunk_dir / f"checkpoint-{starts[budget]}")
        for checkpoint in trunk_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
        return [records[b] for b in plan.budgets]

    def run(self, plan: Plan, budget: float, run_dir: Path, save_steps: int | None, resume: Path | None) -> dict:
        if run_dir.exists():  # an interrupted run: start it again from scratch
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        recipe = self.recipe(plan, budget, run_dir, save_steps, resume)
        self.log(
            event="start",
            run=run_dir.name,
            branched_from=str(resume) if resume else None,
            progress=str(run_dir / RUN_LOG),
        )
        seconds = train_run(recipe, run_dir)
        summary = json.loads((run_dir / "training_summary.json").read_text())
        config = model_config(self.base, self.config.shape, plan.layers, self.vocab_size())
        steps = summary["global_step"]
        record = {
            "layers": plan.layers,
            "seed": plan.seed,
            "learning_rate": plan.learning_rate,
            "batch_size": plan.batch_size,
            "budget": budget,
            "branched_from": resume.name if resume else None,
            "run": run_dir.name,
            "non_embedding_parameters": non_embedding_parameters(config),
            "parameters": count_parameters(config),
            "flops_per_token": train_flops_per_token(config, self.seq_len),
            "global_step": steps,
            "token_slots": steps * plan.batch_size * self.seq_len,
            "tokens": summary["num_input_tokens_seen"],
            "heldout_loss": summary["heldout_loss"],
            "families": summary.get("families", []),
            "train_seconds": round(seconds, 1),
            "precision": summary["precision"],
            "device": summary["device"],
        }
        record["flops"] = record["flops_per_token"] * record["token_slots"]
        write_record(run_dir, record)
        self.log(
            event="done", run=run_dir.name, seconds=record["train_seconds"], heldout_loss=summary["heldout_loss"][""]
        )
        return record


# -- the rule: learning rate and batch size per size ---------------------------------------------------------------
def sweep_choice(records: list[dict]) -> dict:
    """The sweep run with the lowest held-out loss: its learning rate and batch size."""
    best = min(records, key=lambda r: r["heldout_loss"][""])
    return {"learning_rate": best["learning_rate"], "batch_size": best["batch_size"], "run": best["run"]}


def scaled(n: float, points: list[tuple[float, float]], low: float, high: float) -> float:
    """The value at `n` parameters of the power law through two (parameters, value) points, clipped to [low, high]."""
    (n0, v0), (n1, v1) = points
    exponent = math.log(v1 / v0) / math.log(n1 / n0)
    return float(min(high, max(low, v0 * (n / n0) ** exponent)))


def size_rule(sweep: SweepConfig, choices: dict[int, dict], parameters: dict[int, int]) -> dict[int, dict]:
    """Each size's learning rate (3 significant digits) and batch size (the nearest swept one, in log) from the two
    sweep sizes' choices."""
    rule = {}
    for layers, n in parameters.items():
        points = [(parameters[s], choices[s]["learning_rate"]) for s in sweep.sizes]
        learning_rate = scaled(n, points, min(sweep.learning_rates), max(sweep.learning_rates))
        batch_points = [(parameters[s], choices[s]["batch_size"]) for s in sweep.sizes]
        batch = scaled(n, batch_points, min(sweep.batch_sizes), max(sweep.batch_sizes))
        rule[layers] = {
            "learning_rate": float(f"{learning_rate:.3g}"),
            "batch_size": min(sweep.batch_sizes, key=lambda b: abs(math.log(b / batch))),
        }
    return rule


# -- running it ----------------------------------------------------------------------------------------------------
def execute(ladder: Ladder, sizes: list[int], stage: str) -> dict:
    """The sweep, then (stage `all`) the ladder at `sizes`; returns what was decided and trained."""
    config = ladder.config
    ladder.output_dir.mkdir(parents=True, exist_ok=True)
    if shared_tokenizer(ladder.base["data"], ladder.output_dir, ladder.tokenizer_dir):
        ladder.log(event="tokenizer", path=str(ladder.tokenizer_dir))
    vocab = ladder.vocab_size()
    parameters = {
        layers: non_embedding_parameters(model_config(ladder.base, config.shape, layers, vocab))
        for layers in config.sizes
    }
    choices = {}
    for layers in config.sweep.sizes:
        records = [
            ladder.train(Plan(layers, config.seeds[0], lr, batch, (config.sweep.tokens,)))[0]
            for lr in config.sweep.learning_rates
            for batch in config.sweep.batch_sizes
        ]
        choices[layers] = sweep_choice(records)
    rule = size_rule(config.sweep, choices, parameters)
    ladder.log(event="rule", sweep=choices, rule=rule)
    (ladder.output_dir / "rule.json").write_text(json.dumps({"sweep": choices, "rule": rule}, indent=1))
    if stage == "sweep":
        return {"choices": choices, "rule": rule}
    smallest = config.sizes[:2]
    for layers in sizes:
        seeds = config.seeds + (config.noise_seeds if layers in smallest else [])
        for seed in seeds:
            ladder.train(Plan(layers, seed, **rule[layers], budgets=tuple(config.budgets)))
    return {"choices": choices, "rule": rule}


def main(argv: list[str] | None = None, default_recipe: str | Path | None = None) -> None:
    """The ladder's command line; `training/ladder.py` passes the default recipe (training/recipes/ladder.yaml)."""
    from .ladder_report import write_report

    parser = argparse.ArgumentParser(
        prog="training/ladder.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", nargs="?" if default_recipe else None, default=default_recipe)
    parser.add_argument("--quick", action="store_true", help="the recipe's `quick` ladder (fewer, smaller runs)")
    parser.add_argument("--sizes", help="comma-separated sizes (layers) to train now (default: all)")
    parser.add_argument("--stage", choices=("sweep", "all"), default="all", help="stop after the sweep, or not")
    parser.add_argument("--report-only", action="store_true", help="write the report from the completed runs")
    args = parser.parse_args(argv)
    try:
        config, base = load_ladder(args.recipe, quick=args.quick)
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else config.sizes
        unknown = sorted(set(sizes) - set(config.sizes))
        if unknown:
            raise RecipeError(f"--sizes: {unknown} are not sizes of the ladder {config.sizes}")
        ladder = Ladder(config, base, Path(config.output_dir))
    except RecipeError as error:
        exit_with("recipe error", error)
    if not args.report_only:
        started = time.perf_counter()
        execute(ladder, sizes, args.stage)
        ladder.log(event="finished", seconds=round(time.perf_counter() - started, 1))
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python training/ladder.py", *(a for a in given if a != "--report-only")])
    print(f"report: {write_report(ladder, command)}", flush=True)
