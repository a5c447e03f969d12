"""What an ablation recipe is (`AblationConfig`, its `Arm`s) and how an arm resolves into the full training recipe
of one run: the base recipe plus only what the arm changes (cogfm_hf.experiments.ablation runs them)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ..config import Config, RecipeError
from ..tasks import get_task
from ..training.loss import LossConfig
from ..training.recipe import AveragingConfig, CurriculumConfig, TrainRecipe
from .runs import data_key

# What an arm's `schedule` may set: the learning-rate schedule, never the steps or batch (the token budget).
SCHEDULE_FIELDS = ("lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps")


@dataclass
class Arm(Config):
    """What an arm changes relative to the baseline (nothing else may differ)."""

    like: list[str] = field(default_factory=list)  # arms or selections whose changes this arm starts from
    retry_p: float | None = None
    retry_variant: str | None = None
    # on_policy mistakes come from the final model of this arm's run with the same seed (run before this arm)
    retry_model: str | None = None
    loss: dict[str, Any] = field(default_factory=dict)  # LossConfig fields
    curriculum: dict[str, Any] = field(default_factory=dict)  # CurriculumConfig fields
    model: dict[str, Any] = field(default_factory=dict)  # CogFMConfig fields over the base's model overrides
    # A format: task -> its variant (e.g. addition -> addition_lsd) in the data and in every lm-eval task, whose
    # results are filed under the recipe's task names, so arms in different formats compare bucket by bucket
    tasks: dict[str, str] = field(default_factory=dict)
    position_coupling: dict[str, Any] | None = None  # the training recipe's model.position_coupling
    # Task -> knob overrides for every mixture component of that task (e.g. rules_map: {rules: 16}); the
    # difficulty knob is the component's `difficulty`, which an arm does not change (the buckets stay the same)
    knobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)  # SCHEDULE_FIELDS of TrainingArguments
    averaging: dict[str, Any] = field(default_factory=dict)  # AveragingConfig fields (final weight averaging)

    def validate(self) -> None:
        if (self.retry_variant == "on_policy") != (self.retry_model is not None):
            raise self.invalid(
                "retry_model",
                "retry_variant on_policy draws its mistakes from the model of the arm named by retry_model: give "
                f"both in the same arm (got retry_variant {self.retry_variant!r}, retry_model {self.retry_model!r})",
            )
        LossConfig.from_dict(self.loss, "loss")
        CurriculumConfig.from_dict(self.curriculum, "curriculum")
        AveragingConfig.from_dict(self.averaging, "averaging")
        unknown = sorted(set(self.schedule) - set(SCHEDULE_FIELDS))
        if unknown:
            raise self.invalid(
                "schedule", f"unknown field(s) {unknown}: an arm's schedule sets only {list(SCHEDULE_FIELDS)}"
            )
        for old, new in self.tasks.items():
            try:
                get_task(old), get_task(new)
            except ValueError as error:
                raise self.invalid(f"tasks.{old}", str(error)) from None
        for name, knobs in self.knobs.items():
            try:
                task = get_task(name)
                if task.difficulty_knob in knobs:
                    raise ValueError(f"sets the difficulty knob {task.difficulty_knob!r}, which the buckets are by")
                task.knobs(**{**task.train_knobs, **knobs})
            except ValueError as error:
                raise self.invalid(f"knobs.{name}", str(error)) from None


@dataclass
class QuickConfig(Config):
    arms: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    output_dir: str = "outputs/ablation-quick"
    report_dir: str | None = None  # default: output_dir


@dataclass
class AblationConfig(Config):
    section: ClassVar[str] = "ablation"

    base: str  # the baseline's training recipe (relative to the ablation recipe's folder)
    arms: dict[str, Arm]
    test_tasks: list[str]  # lm-eval generation tasks scored per item (exact match)
    dev_tasks: list[str]  # the same buckets drawn from training templates: every choice is made on these
    output_dir: str = "outputs/ablation"
    report_dir: str | None = None  # where results.md and the plots go (default: output_dir)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    learning_rates: list[float] = field(default_factory=list)  # the baseline's sweep; empty: the base recipe's
    select: dict[str, list[str]] = field(default_factory=dict)  # selection name -> candidate arms
    # arm -> its control arm or selection, compared as with the baseline
    controls: dict[str, str] = field(default_factory=dict)
    self_correction_tasks: list[str] = field(default_factory=list)
    core: list[str] = field(default_factory=list)  # the arms of the core comparison (`--core`)
    quick: QuickConfig | None = None
    target: float = 0.5  # tokens-to-target: in-distribution accuracy on the in-loop learning curve
    gate: dict[str, float] = field(default_factory=lambda: {"easiest": 0.8, "top": 0.5})  # the baseline's dev accuracy
    eval_batch_size: int = 64
    test_limit: int | None = None  # items per task (None: all); tests use a few

    def validate(self) -> None:
        if "baseline" not in self.arms:
            raise self.invalid("arms", "give a mapping of arms that includes `baseline`")
        names = set(self.arms) | set(self.select)
        for name, arm in self.arms.items():
            for ref in arm.like:
                if ref not in names or ref == name:
                    raise self.invalid(
                        f"arms.{name}.like", f"{ref!r} is not another arm or a selection {sorted(self.select)}"
                    )
            if arm.retry_model is not None and (arm.retry_model not in self.arms or arm.retry_model == name):
                raise self.invalid(f"arms.{name}.retry_model", f"{arm.retry_model!r} is not another arm")
        for name, candidates in self.select.items():
            missing = [c for c in candidates if c not in self.arms]
            if missing or not candidates:
                raise self.invalid(f"select.{name}", f"unknown arm(s) {missing}" if missing else "empty")
        for arm, control in self.controls.items():
            unknown = ([arm] if arm not in self.arms else []) + ([control] if control not in names else [])
            if unknown:
                raise self.invalid(
                    f"controls.{arm}",
                    f"unknown arm(s) {unknown}; the recipe has arms {sorted(self.arms)} "
                    f"and selections {sorted(self.select)}",
                )
            if arm == control:
                raise self.invalid(f"controls.{arm}", "an arm cannot be its own control")
        for section, listed in (("core", self.core), ("quick.arms", self.quick.arms if self.quick else [])):
            missing = [a for a in listed if a not in self.arms]
            if missing:
                raise self.invalid(section, f"unknown arm(s) {missing}")
        if set(self.gate) != {"easiest", "top"}:
            raise self.invalid("gate", f"give the keys easiest and top, got {sorted(self.gate)}")


def load_ablation(path: str | Path) -> tuple[AblationConfig, dict]:
    """The ablation config and its base training recipe (as the mapping that arms change), checked before
    anything runs."""
    path = Path(path)
    config = AblationConfig.load(path)
    base_path = path.parent / config.base
    if not base_path.is_file():
        raise RecipeError(f"{base_path} does not exist", "base").in_file(path)
    base = yaml.safe_load(base_path.read_text()) or {}
    try:
        TrainRecipe.from_dict(base)  # fails early on a bad base recipe
    except RecipeError as error:
        raise error.in_file(base_path) from None
    for name, arm in config.arms.items():  # and on an architecture the model config refuses
        if arm.model or arm.position_coupling:
            model = base.get("model") or {}
            changed = {**base, "model": {**model, "overrides": {**(model.get("overrides") or {}), **arm.model}}}
            if arm.position_coupling:
                changed["model"]["position_coupling"] = arm.position_coupling
            try:
                TrainRecipe.from_dict(changed)
            except (RecipeError, ValueError) as error:
                field_name = "model" if arm.model else "position_coupling"
                raise RecipeError(f"{error}", f"arms.{name}.{field_name}").in_file(path) from None
    return config, base


def renamed_task(lm_eval_task: str, tasks: dict[str, str]) -> str:
    """An lm-eval task name (`cogfm_<task>_<set>`) with its generator replaced per `tasks` (an arm's format)."""
    for old, new in tasks.items():
        if lm_eval_task.startswith(f"cogfm_{old}_"):
            return f"cogfm_{new}_" + lm_eval_task[len(f"cogfm_{old}_") :]
    return lm_eval_task


def filed_under_recipe_names(evaluation: dict, recipe_name: dict[str, str], tasks: dict[str, str]) -> dict:
    """An arm's evaluation in its own format, filed under the recipe's task names (and generators), so that arms in
    different formats compare bucket by bucket."""
    generator = {new: old for old, new in tasks.items()}
    return {
        split: {
            recipe_name[task]: {**result, "task": generator.get(result["task"], result["task"])}
            if "task" in result  # test and dev sets; self-correction results are scores only
            else result
            for task, result in results.items()
        }
        for split, results in evaluation.items()
    }


# -- resolving arms into training recipes -----------------------------------------------------------
def merged_changes(config: AblationConfig, name: str, choices: dict[str, str], seen=()) -> dict:
    """An arm's changes (its Arm fields: "retry_p", "loss", "curriculum", "model", "schedule"...), after its `like`
    chain.
    `choices` maps each selection to its chosen arm; a missing choice raises KeyError (not decided yet)."""
    if name in seen:
        raise RecipeError(f"arms: `like` cycle through {name!r}")
    if name in config.select:
        return merged_changes(config, choices[name], choices, (*seen, name))
    arm = config.arms[name]
    changes: dict = {
        "loss": {},
        "curriculum": {},
        "model": {},
        "tasks": {},
        "knobs": {},
        "schedule": {},
        "averaging": {},
    }
    for ref in arm.like:
        inherited = merged_changes(config, ref, choices, (*seen, name))
        for key, value in inherited.items():
            changes[key] = {**changes.get(key, {}), **value} if isinstance(value, dict) else value
    for key in ("retry_p", "retry_variant", "retry_model"):
        if getattr(arm, key) is not None:
            changes[key] = getattr(arm, key)
    if arm.retry_variant is not None and arm.retry_model is None:
        changes.pop("retry_model", None)  # a variant of its own replaces an inherited on_policy
    changes["loss"] = {**changes["loss"], **arm.loss}
    changes["curriculum"] = {**changes["curriculum"], **arm.curriculum}
    changes["model"] = {**changes["model"], **arm.model}
    changes["tasks"] = {**changes["tasks"], **arm.tasks}
    changes["knobs"] = {
        task: {**changes["knobs"].get(task, {}), **arm.knobs.get(task, {})} for task in changes["knobs"] | arm.knobs
    }
    changes["schedule"] = {**changes["schedule"], **arm.schedule}
    changes["averaging"] = {**changes["averaging"], **arm.averaging}
    if arm.position_coupling is not None:
        changes["position_coupling"] = arm.position_coupling
    for key in ("model", "tasks", "knobs", "schedule", "averaging"):
        if not changes[key]:
            del changes[key]  # so the records of arms that keep these read as before
    return changes


def arm_recipe(
    base: dict,
    changes: dict,
    *,
    seed: int,
    learning_rate: float,
    run_dir: Path,
    data_root: Path,
    tokenizer_dir: Path | None,
    retry_model_dir: Path | None = None,
) -> dict:
    """The full training recipe of one run: the base recipe plus the arm's changes, the seed, the chosen
    learning rate and where things go (`retry_model_dir`: the run whose model writes on_policy mistakes). Nothing
    else is touched (tests compare resolved recipes)."""
    if ("retry_model" in changes) != (retry_model_dir is not None):
        raise ValueError("arm_recipe: give retry_model_dir exactly when the arm's changes name a retry_model")
    recipe = copy.deepcopy(base)
    tasks = changes.get("tasks", {})
    for source in recipe["data"].get("sources", []):
        if source.get("type") == "tasks":
            for component in source["mixture"]:
                if component["task"] in changes.get("knobs", {}):
                    component["knobs"] = {**component.get("knobs", {}), **changes["knobs"][component["task"]]}
                component["task"] = tasks.get(component["task"], component["task"])
                for key in ("retry_p", "retry_variant"):
                    if key in changes:
                        component[key] = changes[key]
                if "retry_model" in changes:
                    component["retry_model"] = str(retry_model_dir)
    if tasks and recipe.get("eval", {}).get("tasks"):
        recipe["eval"]["tasks"] = [renamed_task(task, tasks) for task in recipe["eval"]["tasks"]]
    recipe["loss"] = {**(recipe.get("loss") or {}), **changes.get("loss", {})}
    recipe["curriculum"] = {**(recipe.get("curriculum") or {}), **changes.get("curriculum", {})}
    if changes.get("model"):
        model = recipe.setdefault("model", {})
        model["overrides"] = {**(model.get("overrides") or {}), **changes["model"]}
    if changes.get("position_coupling"):
        recipe.setdefault("model", {})["position_coupling"] = changes["position_coupling"]
    if changes.get("averaging"):
        recipe["averaging"] = {**(recipe.get("averaging") or {}), **changes["averaging"]}
    recipe["training"] = {
        **recipe["training"],
        **changes.get("schedule", {}),
        "seed": seed,
        "learning_rate": learning_rate,
        "output_dir": str(run_dir),
    }
    if tokenizer_dir is not None:
        recipe["data"]["tokenizer"] = {**recipe["data"].get("tokenizer", {}), "path": str(tokenizer_dir)}
    # Arms with the same data share one build: the folder is named by the data section's content.
    recipe["data"]["output_dir"] = str(data_root / data_key(recipe["data"]))
    return recipe


def run_name(arm: str, learning_rate: float, seed: int) -> str:
    return f"{arm}-lr{learning_rate:g}-seed{seed}"
