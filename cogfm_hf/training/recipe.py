"""Training recipes: a YAML file with sections, any field overridable on the command line.

    model:      preset name + config overrides
    data:       a data recipe (cogfm_hf.data.recipe), built on first use
    training:   transformers TrainingArguments fields (output_dir, max_steps, learning_rate, seed, ...)
    curriculum: CurriculumSampler arguments          loss: LossConfig
    guard:      skipped-update guard                 eval: lm-eval tasks in the loop and at the end
    lora:       peft LoRA settings (training/finetune_lora.py)
    peak_tflops: the peak MFU is measured against (null: the GPU's datasheet value, or a measured CPU GEMM)
    cpu_threads: torch threads per process on CPU (null: this machine's cores / processes on it)

Overrides: `--max_steps 50 --seed 3` set TrainingArguments fields; `--curriculum.pacing sqrt` and
`--data.output_dir DIR` set a field of a section. Values are parsed as YAML (`--bf16 true`, `--lr 3e-4`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import TrainingArguments

from ..data.recipe import RecipeError
from .evaluation import EvalConfig
from .loss import LossConfig

TRAINING_ARGUMENT_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}


@dataclass
class CurriculumConfig:
    pacing: str = "uniform"
    c0: float = 0.1
    p: float = 2.0
    stages: int = 4
    pacing_fraction: float = 1.0
    control: bool = False
    anneal_fraction: float = 0.0
    anneal_hard_fraction: float = 0.3
    anneal_weight: float = 0.5


@dataclass
class GuardConfig:
    enabled: bool = True
    spike_factor: float = 3.0  # skip an update whose loss exceeds this multiple of the recent average
    warmup_steps: int = 20  # steps before spikes are judged (the loss falls fast at the start)
    ema_decay: float = 0.9


@dataclass
class ModelConfig:
    preset: str = "cogfm-tiny"
    overrides: dict = field(default_factory=dict)
    checkpoint: str | None = None  # fine-tuning: start from this checkpoint instead of a fresh preset


@dataclass
class LoraSection:
    """peft LoRA settings for training/finetune_lora.py; target_modules null = peft's default for cogfm."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None
    merged_output_dir: str | None = None  # also export base + adapter merged as a Hub-ready checkpoint


@dataclass
class TrainRecipe:
    data: dict
    training: dict
    model: ModelConfig = field(default_factory=ModelConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    peak_tflops: float | None = None
    cpu_threads: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {
    "model": ModelConfig,
    "curriculum": CurriculumConfig,
    "loss": LossConfig,
    "guard": GuardConfig,
    "eval": EvalConfig,
    "lora": LoraSection,
}


def parse_overrides(args: list[str]) -> list[tuple[str, object]]:
    """["--max_steps", "50", "--curriculum.pacing=sqrt"] -> [("max_steps", 50), ("curriculum.pacing", "sqrt")]"""
    pairs, index = [], 0
    while index < len(args):
        token = args[index]
        if not token.startswith("--"):
            raise RecipeError(f"expected --field value, got {token!r}")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            index += 1
        else:
            if index + 1 >= len(args):
                raise RecipeError(f"--{key} needs a value")
            value = args[index + 1]
            index += 2
        pairs.append((key.replace("-", "_") if "." not in key else key, yaml.safe_load(value)))
    return pairs


def apply_overrides(data: dict, overrides: list[tuple[str, object]]) -> dict:
    data = copy.deepcopy(data)
    for key, value in overrides:
        if "." in key:
            section, *path = key.split(".")
            if section not in data and section not in SECTIONS and section != "training":
                raise RecipeError(f"--{key}: no recipe section {section!r}")
            target = data.setdefault(section, {})
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
        elif key in TRAINING_ARGUMENT_FIELDS:
            data.setdefault("training", {})[key] = value
        elif key in TrainRecipe.__dataclass_fields__:
            data[key] = value
        else:
            raise RecipeError(
                f"--{key}: not a TrainingArguments field or recipe field; use --section.field for "
                f"sections {sorted(SECTIONS) + ['data', 'training']}"
            )
    return data


def load_train_recipe(path: str | Path, overrides: list[str] | None = None) -> TrainRecipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    data = apply_overrides(data, parse_overrides(overrides or []))
    return recipe_from_dict(data, str(path))


def section_from_mapping(cls, values, where: str):
    """A dataclass from a recipe mapping; unknown fields and bad values raise a RecipeError naming `where`."""
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; known: {known}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{where}: {error}") from None


def recipe_from_dict(data: dict, where: str = "recipe") -> TrainRecipe:
    unknown = sorted(set(data) - set(TrainRecipe.__dataclass_fields__))
    if unknown:
        raise RecipeError(f"{where}: unknown section(s) {unknown}; known: {sorted(TrainRecipe.__dataclass_fields__)}")
    for required in ("data", "training"):
        if not isinstance(data.get(required), dict):
            raise RecipeError(f"{where}: needs a `{required}:` section")
    unknown = sorted(set(data["training"]) - TRAINING_ARGUMENT_FIELDS)
    if unknown:
        raise RecipeError(f"{where}: training: unknown TrainingArguments field(s) {unknown}")
    sections = {
        name: section_from_mapping(cls, data.get(name) or {}, f"{where}: {name}") for name, cls in SECTIONS.items()
    }
    return TrainRecipe(
        data=data["data"],
        training=data["training"],
        peak_tflops=data.get("peak_tflops"),
        cpu_threads=data.get("cpu_threads"),
        **sections,
    )
