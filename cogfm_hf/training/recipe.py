"""Training recipes: a YAML file with sections, any field overridable on the command line.

    model:      preset name + config overrides
    data:       a data recipe (cogfm_hf.data.recipe), built on first use
    training:   transformers TrainingArguments fields (output_dir, max_steps, learning_rate, seed, ...)
    curriculum: CurriculumSampler settings           loss: LossConfig
    guard:      skipped-update guard                 eval: lm-eval tasks in the loop and at the end
    averaging:  the final model as the average of the last checkpoints' weights
    lora:       peft LoRA settings (training/finetune_lora.py)
    peak_tflops: the peak MFU is measured against (null: the GPU's datasheet value, or a measured CPU GEMM)
    cpu_threads: torch threads per process on CPU (null: this machine's cores / processes on it)

Overrides: `--max_steps 50 --seed 3` set TrainingArguments fields; `--curriculum.pacing sqrt` and
`--data.output_dir DIR` set a field of a section. Values are parsed as YAML (`--bf16 true`, `--learning_rate 3e-4`).
Every section is a `cogfm_hf.config.Config`: unknown keys, wrong types and impossible values fail before any work.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from transformers import TrainingArguments

from ..config import Config, convert
from ..data.recipe import DataRecipe
from ..modeling.configuration_cogfm import PRESETS, CogFMConfig
from .checkpoints import LATEST
from .evaluation import EvalConfig
from .loss import LossConfig

PACINGS = ("uniform", "linear", "sqrt", "root", "step")


@dataclass
class CurriculumConfig(Config):
    """Which sequences the CurriculumSampler draws at which step (see cogfm_hf.training.sampler)."""

    section: ClassVar[str] = "curriculum"

    pacing: str = "uniform"  # one of PACINGS
    c0: float = 0.1  # competence at step 0: the share of the data (by difficulty rank) drawn from at first
    p: float = 2.0  # the root of `root` pacing
    stages: int = 4  # steps of `step` pacing
    pacing_fraction: float = 1.0  # the share of training over which competence grows to 1
    control: bool = False  # the random-order control: the same growing pool, of random sequences
    anneal_fraction: float = 0.0  # the final share of training that up-weights the hardest sequences
    anneal_hard_fraction: float = 0.3  # what "hardest" means: this share of the data
    anneal_weight: float = 0.5  # the probability that a draw in the anneal comes from the hardest

    def validate(self) -> None:
        if self.pacing not in PACINGS:
            raise self.invalid("pacing", f"must be one of {PACINGS}, got {self.pacing!r}")
        if not 0.0 < self.c0 <= 1.0:
            raise self.invalid("c0", f"must be in (0, 1], got {self.c0!r}")
        if self.p <= 0:
            raise self.invalid("p", f"must be > 0, got {self.p!r}")
        if self.stages < 1:
            raise self.invalid("stages", f"must be >= 1, got {self.stages!r}")
        if not 0.0 < self.pacing_fraction <= 1.0:
            raise self.invalid("pacing_fraction", f"must be in (0, 1], got {self.pacing_fraction!r}")
        if not 0.0 <= self.anneal_fraction < 1.0:
            raise self.invalid("anneal_fraction", f"must be in [0, 1), got {self.anneal_fraction!r}")
        if not 0.0 < self.anneal_hard_fraction <= 1.0:
            raise self.invalid("anneal_hard_fraction", f"must be in (0, 1], got {self.anneal_hard_fraction!r}")
        if not 0.0 <= self.anneal_weight <= 1.0:
            raise self.invalid("anneal_weight", f"must be in [0, 1], got {self.anneal_weight!r}")


@dataclass
class GuardConfig(Config):
    """When the update guard (cogfm_hf.training.guard) skips an optimizer step."""

    section: ClassVar[str] = "guard"

    enabled: bool = True
    spike_factor: float = 3.0  # skip an update whose loss exceeds this multiple of the recent average
    warmup_steps: int = 20  # steps before spikes are judged (the loss falls fast at the start)
    ema_decay: float = 0.9  # how fast the recent average forgets
    max_consecutive_skips: int = 10  # this many skips in a row stop the run: the loss moved for good, or data broke

    def validate(self) -> None:
        if self.max_consecutive_skips < 1:
            raise self.invalid("max_consecutive_skips", f"must be >= 1, got {self.max_consecutive_skips}")
        if self.spike_factor <= 1.0:
            raise self.invalid("spike_factor", f"must be > 1 (a multiple of the recent loss), got {self.spike_factor}")
        if self.warmup_steps < 0:
            raise self.invalid("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise self.invalid("ema_decay", f"must be in [0, 1), got {self.ema_decay}")


@dataclass
class AveragingConfig(Config):
    """End training with the uniform average of the model's weights at `checkpoints` steps: the last one and those
    `every_steps` apart before it (cogfm_hf.training.averaging). What arXiv 2511.18903 puts in place of (or beside
    a moderate) learning-rate decay, so a curriculum's last, hardest data is not trained on at a vanishing rate."""

    section: ClassVar[str] = "averaging"

    checkpoints: int = 0  # how many weights are averaged; 0: off (the final model is the last step's)
    every_steps: int = 0  # the steps between them

    def validate(self) -> None:
        if self.checkpoints < 0 or self.checkpoints == 1:
            raise self.invalid("checkpoints", f"must be 0 (off) or >= 2, got {self.checkpoints}")
        if self.checkpoints and self.every_steps < 1:
            raise self.invalid("every_steps", f"must be >= 1 when checkpoints are averaged, got {self.every_steps}")
        if not self.checkpoints and self.every_steps:
            raise self.invalid("every_steps", "is used only when `checkpoints` >= 2 are averaged: set both or neither")


@dataclass
class ModelConfig(Config):
    section: ClassVar[str] = "model"

    preset: str = "cogfm-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # CogFMConfig fields
    checkpoint: str | None = None  # fine-tuning: start from this checkpoint instead of a fresh preset
    # {stride: N, train_column_gap: G, train_column_offset: O, documents: all | sums, canon: bool}: coupled RoPE
    # positions for the `order: lsd` arithmetic format (CogFMConfig.position_coupling), with the digit, newline and
    # (`documents: sums`, which couples only sums and leaves every other document Llama's positions) operator token
    # ids from the tokenizer; `canon: false` lets Canon layers pass coupled tokens through
    position_coupling: dict[str, Any] | None = None

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise self.invalid("preset", f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        known = {f.name for f in dataclasses.fields(CogFMConfig)}
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise self.invalid("overrides", f"unknown CogFMConfig field(s) {unknown}; known: {sorted(known)}")
        if "position_coupling" in self.overrides:
            raise self.invalid(
                "overrides.position_coupling",
                "set model.position_coupling: {stride: N} (the token ids come from the tokenizer)",
            )
        if self.position_coupling is not None:
            if not isinstance(self.position_coupling, dict) or "stride" not in self.position_coupling:
                raise self.invalid("position_coupling", f"give {{stride: N}}, got {self.position_coupling!r}")
            documents = self.position_coupling.get("documents", "all")
            if documents not in ("all", "sums"):
                raise self.invalid("position_coupling.documents", f"give 'all' or 'sums', got {documents!r}")
            stand_in_ids = dict(digit_token_ids=list(range(10)), newline_token_id=10)  # the tokenizer's, at build
            if documents == "sums":
                stand_in_ids["operator_token_ids"] = [11]
            given = {key: value for key, value in self.position_coupling.items() if key != "documents"}
            try:
                canon_set = self.overrides.get("canon_set", PRESETS[self.preset].get("canon_set", ""))
                CogFMConfig(canon_set=canon_set, position_coupling={**stand_in_ids, **given})
            except ValueError as error:
                raise self.invalid("position_coupling", str(error)) from None
        try:  # the values too: CogFMConfig names the field and the fix
            CogFMConfig.from_preset(self.preset, **self.overrides)
        except (TypeError, ValueError) as error:
            raise self.invalid("overrides", str(error)) from None


@dataclass
class LoraSection(Config):
    """peft LoRA settings for training/finetune_lora.py; target_modules null = peft's default for cogfm."""

    section: ClassVar[str] = "lora"

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None
    merged_output_dir: str | None = None  # also export base + adapter merged as a Hub-ready checkpoint

    def validate(self) -> None:
        if self.r < 1:
            raise self.invalid("r", f"must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise self.invalid("alpha", f"must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise self.invalid("dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class TrainRecipe(Config):
    data: DataRecipe
    # transformers.TrainingArguments fields, passed to it as given (checked against its field names and types);
    # `bf16: auto` (the default) means bf16 autocast where the hardware does bf16 matmuls natively.
    training: dict[str, Any]
    model: ModelConfig = field(default_factory=ModelConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    peak_tflops: float | None = None
    cpu_threads: int | None = None
    # torch.compile of the training forward pass with its loss (CogFMTrainer); auto: when the run is long enough
    # to earn back the compile time (cogfm_hf.training.run.resolve_compile).
    compile: bool | Literal["auto"] = "auto"

    def validate(self) -> None:
        hints = _training_argument_types()
        for name, value in self.training.items():
            if name not in hints:
                raise self.invalid(
                    f"training.{name}", "not a transformers.TrainingArguments field (check its spelling)"
                )
            if name == "bf16" and value == "auto":
                continue
            if name.startswith("torch_compile"):
                raise self.invalid(
                    f"training.{name}",
                    "use the recipe's top-level `compile: true` instead: CogFMTrainer compiles the forward pass "
                    "together with the loss, TrainingArguments' torch_compile would compile the model alone",
                )
            if name == "resume_from_checkpoint" and isinstance(value, bool):  # transformers' own meaning of true
                self.training[name] = LATEST if value else None
                continue
            checked = convert(value, hints[name], f"training.{name}")
            # TrainingArguments gets the value as given (an int warmup_steps stays an int), except a number that
            # YAML 1.1 read as a string (5e-4, without a dot).
            if isinstance(value, str) and isinstance(checked, float):
                self.training[name] = checked
        if self.training.get("remove_unused_columns"):
            raise self.invalid(
                "training.remove_unused_columns", "must be false (or left out): the loss reads the packed columns"
            )
        if "output_dir" not in self.training:
            raise self.invalid("training.output_dir", "give the run's output directory")
        if self.training.get("max_steps", -1) == 0 or self.training.get("max_steps", -1) < -1:
            raise self.invalid(
                "training.max_steps",
                f"must be > 0 (or -1: num_train_epochs decides), got {self.training['max_steps']}",
            )
        self._check_model_fits_data()
        if self.averaging.checkpoints:
            window = (self.averaging.checkpoints - 1) * self.averaging.every_steps
            if self.training.get("max_steps", -1) <= window:
                raise self.invalid(
                    "averaging",
                    f"averages the weights at the last {self.averaging.checkpoints} multiples of "
                    f"{self.averaging.every_steps} steps up to training.max_steps, which must then be > {window} "
                    f"(got {self.training.get('max_steps', -1)})",
                )
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise self.invalid("peak_tflops", f"must be > 0 or null, got {self.peak_tflops}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise self.invalid("cpu_threads", f"must be >= 1 or null, got {self.cpu_threads}")

    def _check_model_fits_data(self) -> None:
        """The model must hold the data's vocabulary and sequence length (known before the build: from the recipe;
        a tokenizer reused from a directory is checked against the model once loaded, in `build_model`)."""
        overrides = self.model.overrides
        tokenizer = self.data.tokenizer
        if "vocab_size" in overrides and tokenizer.path is None and overrides["vocab_size"] < tokenizer.vocab_size:
            raise self.invalid(
                "model.overrides.vocab_size",
                f"{overrides['vocab_size']} is smaller than the tokenizer's vocabulary (data.tokenizer.vocab_size "
                f"{tokenizer.vocab_size}); leave it out (the model takes the tokenizer's size) or raise it",
            )
        seq_len = self.data.pack.seq_len
        if overrides.get("max_position_embeddings", seq_len) < seq_len:
            raise self.invalid(
                "model.overrides.max_position_embeddings",
                f"{overrides['max_position_embeddings']} is shorter than the training sequences "
                f"(data.pack.seq_len {seq_len}); leave it out (the model takes at least seq_len) or raise it",
            )

    @classmethod
    def override_key(cls, key: str) -> str:
        """`--max_steps 50` is short for `--training.max_steps 50`."""
        if (
            "." not in key
            and key not in {f.name for f in dataclasses.fields(cls)}
            and key in _training_argument_types()
        ):
            return f"training.{key}"
        return key


@functools.cache
def _training_argument_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainingArguments) if f.init}
