"""The run flows behind the entry points: pretraining and LoRA fine-tuning from a recipe.

    accelerate launch training/pretrain.py [RECIPE.yaml] [--field value ...]
    accelerate launch -m cogfm_hf.training pretrain RECIPE.yaml [--field value ...]      # the same, by module
    python -m cogfm_hf.training finetune_lora RECIPE.yaml --model.checkpoint DIR

Each flow: the TrainingArguments (which set up the distributed state), the data (built once, on the main process
first), the model, `CogFMTrainer`, training, then the outputs of cogfm_hf.training.outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TrainingArguments, set_seed

from ..config import RecipeError
from ..console import exit_with
from ..data import build, load_packed
from ..data.pipeline import MANIFEST
from ..hardware import peak_flops, resolve_bf16, set_cpu_threads
from ..modeling.configuration_cogfm import SSM_LAYER_TYPES, CogFMConfig
from ..modeling.modeling_cogfm import CogFMForCausalLM
from ..presets import train_flops_per_token
from ..tasks import BACK
from .checkpoints import Preempted, clear_staging, damaged_weights, recipe_changes, resolve_resume
from .evaluation import LMEvalCallback
from .guard import GuardStop
from .heldout import split_heldout
from .outputs import RECIPE_FILE, RunTiming, recipe_text, save_final_checkpoint, write_recipe, write_run_outputs
from .recipe import TrainRecipe
from .trainer import CogFMTrainer


@dataclass
class RunSetup:
    """What every run needs before its model: arguments, distributed state, threads, the built data."""

    args: TrainingArguments
    bf16: bool
    state: PartialState
    cpu_threads: int | None  # None on accelerators
    tokenizer: PreTrainedTokenizerBase
    dataset: Dataset  # the rows training draws from
    heldout: Dataset | None  # the rows kept out of it (eval.heldout_sequences), or None
    resume_from: str | None  # the complete checkpoint to resume from (cogfm_hf.training.checkpoints)
    data_seconds: float  # building the data (~0 when it was built already)

    @property
    def seq_len(self) -> int:
        return len(self.dataset[0]["input_ids"])


def newline_token_ids(tokenizer) -> list[int]:
    return [i for token, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([token])]


def configure_wandb(output_dir: str) -> None:
    """Without a key wandb would ask for one and crash a run without a terminal: log offline, sync later."""
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_DIR", str(Path(output_dir).resolve()))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)


def training_arguments(recipe: TrainRecipe) -> tuple[TrainingArguments, bool]:
    values = dict(recipe.training)
    bf16 = resolve_bf16(values.pop("bf16", "auto"))
    values.setdefault("report_to", ["wandb"])
    values.setdefault("include_num_input_tokens_seen", "non_padding")  # state.num_input_tokens_seen, exact on resume
    values["remove_unused_columns"] = False  # the loss needs error_mask, task_ids, difficulties
    # Without an accelerator, train on the CPU: under torchrun (training/accelerate/cpu_ddp.yaml) this is what
    # makes Accelerate join the processes in a gloo group (its MULTI_CPU mode) instead of running them alone.
    values.setdefault("use_cpu", not torch.cuda.is_available())
    values.setdefault("dataloader_pin_memory", not values["use_cpu"])
    report_to = values["report_to"] if isinstance(values["report_to"], list) else [values["report_to"]]
    if "wandb" in report_to:
        configure_wandb(values["output_dir"])
    return TrainingArguments(bf16=bf16, **values), bf16


def prepare(recipe: TrainRecipe) -> RunSetup:
    args, bf16 = training_arguments(recipe)  # first: it sets up the distributed state (CPU or GPU)
    state = PartialState()
    # Before any work: a checkpoint to resume from must exist and be complete.
    resume_from = resolve_resume(
        args.resume_from_checkpoint, args.output_dir, args.save_only_model, announce=state.is_main_process
    )
    if resume_from and not recipe.model.checkpoint:
        check_resume_shape(Path(resume_from), recipe)
    if state.is_main_process:
        clear_staging(args.output_dir)  # what a save interrupted in an earlier run left
        if resume_from and (changes := recipe_changes(resume_from, recipe.to_dict(), RECIPE_FILE)):
            # Allowed (a cooldown branched from a stable phase changes the schedule on purpose), never silent.
            print(
                f"resume: WARNING, this recipe differs from the one {Path(resume_from).name} was made with; "
                f"the run continues under the new values:\n  " + "\n  ".join(changes),
                flush=True,
            )
    threads = set_cpu_threads(recipe.cpu_threads) if args.use_cpu else None
    started = time.perf_counter()
    with state.main_process_first():  # the main process builds; the others then find it built
        data_dir = build(recipe.data)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    dataset, heldout = split_heldout(load_packed(data_dir / "packed"), recipe.eval.heldout_sequences)
    return RunSetup(
        args, bf16, state, threads, tokenizer, dataset, heldout, resume_from, time.perf_counter() - started
    )


# The fields that shape the weights, all known before the data is built (the vocabulary is checked against the
# tokenizer in build_model; a changed one shows in the recipe diff and in the weights' shapes).
SHAPE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
    "qk_norm",
)


def check_resume_shape(checkpoint: Path, recipe: TrainRecipe) -> None:
    """A pretraining checkpoint must have the shape the recipe builds, or its weights would not load (after the
    data build, with a traceback)."""
    saved_file = checkpoint / "config.json"
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    planned = CogFMConfig.from_preset(recipe.model.preset, **recipe.model.overrides)
    differ = [
        f"{f} {saved.get(f)} -> {getattr(planned, f)}" for f in SHAPE_FIELDS if saved.get(f) != getattr(planned, f)
    ]
    if differ:
        raise RecipeError(
            f"{checkpoint} holds a model of another shape than the recipe builds ({', '.join(differ)}); resume with "
            "the recipe it was trained with (its cogfm_recipe.yaml)",
            "training.resume_from_checkpoint",
        )


# What a sum's first line holds besides digits (`743+985=?`): the tokens written only with these characters.
SUM_OPERATOR_CHARACTERS = frozenset("+=?")


def position_coupling(
    tokenizer,
    stride: int,
    train_column_gap: int = 1,
    train_column_offset: int = 0,
    documents: str = "all",
    canon: bool = True,
) -> dict:
    """CogFMConfig.position_coupling for this tokenizer: the ids of its single-token digits and newline, and with
    `documents: sums` those of its operator tokens (only sums are coupled; every other document keeps ordinary
    positions); `canon: false` lets Canon layers pass coupled tokens through."""
    ids = {text: tokenizer.encode(text, add_special_tokens=False) for text in [*"0123456789", "\n"]}
    split = {text: found for text, found in ids.items() if len(found) != 1}
    if split:
        raise RecipeError(
            f"the tokenizer does not write each of {sorted(split)} as one token ({split}); position coupling reads "
            "digits and newlines token by token",
            "model.position_coupling",
        )
    coupling = dict(digit_token_ids=[ids[d][0] for d in "0123456789"], newline_token_id=ids["\n"][0], stride=stride)
    if train_column_gap != 1:
        coupling["train_column_gap"] = train_column_gap
    if train_column_offset != 0:
        coupling["train_column_offset"] = train_column_offset
    if not canon:
        coupling["canon"] = False
    if BACK in tokenizer.get_vocab():  # our tokenizers all have it: retry data is written with it
        coupling["back_token_id"] = tokenizer.convert_tokens_to_ids(BACK)
    if documents == "sums":
        coupling["operator_token_ids"] = sorted(
            token_id
            for token_id in tokenizer.get_vocab().values()
            if (text := tokenizer.decode([token_id])) and set(text) <= SUM_OPERATOR_CHARACTERS
        )
    elif documents != "all":
        raise RecipeError(f"documents must be 'all' or 'sums', got {documents!r}", "model.position_coupling.documents")
    return coupling


def build_model(recipe: TrainRecipe, tokenizer, seq_len: int) -> CogFMForCausalLM:
    preset = CogFMConfig.from_preset(recipe.model.preset)
    fields = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=max(preset.max_position_embeddings, seq_len),
    )
    if recipe.model.position_coupling is not None:
        fields["position_coupling"] = position_coupling(tokenizer, **recipe.model.position_coupling)
    config = CogFMConfig.from_preset(recipe.model.preset, **{**fields, **recipe.model.overrides})
    if config.vocab_size < len(tokenizer):  # a tokenizer reused from a directory, not known before loading it
        raise RecipeError(
            f"{config.vocab_size} is smaller than the tokenizer's vocabulary ({len(tokenizer)}); "
            "leave it out or raise it",
            "model.overrides.vocab_size",
        )
    return CogFMForCausalLM(config)


# `compile: auto` compiles runs of at least this many optimizer steps: compiling costs ~40 s the first time (a few
# seconds from inductor's cache afterwards) and saves ~1/3 of every step at cogfm-tiny (docs/benchmarks.md).
COMPILE_MIN_STEPS = 200


def resolve_compile(value: bool | str, args: TrainingArguments, config: CogFMConfig) -> bool:
    """The recipe's `compile`: true, false, or auto = runs of COMPILE_MIN_STEPS or more (an epoch-bound run,
    max_steps -1, counts as long), except under FSDP, where compiling is left to an explicit `compile: true`, and
    for models with Mamba-2 layers: on packed rows their scan runs on the documents unpacked into length buckets,
    shapes that change with every batch, and the compiler recompiles for them (a hybrid run measured minutes per
    step); compiled, the hybrid step was no faster than eager in the benchmark either."""
    if value != "auto":
        return bool(value)
    if args.fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP"):  # the flag `accelerate launch` sets for FSDP
        return False
    if set(config.layer_types) & set(SSM_LAYER_TYPES):
        return False
    return args.max_steps < 0 or args.max_steps >= COMPILE_MIN_STEPS


def make_trainer(recipe: TrainRecipe, model, setup: RunSetup) -> CogFMTrainer:
    peak, peak_note = peak_flops(recipe.peak_tflops, setup.bf16)
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    compile = resolve_compile(recipe.compile, setup.args, config)
    # Saved with every checkpoint: `tokenizer(..., truncation=True)` then caps inputs at the model's context.
    setup.tokenizer.model_max_length = config.max_position_embeddings
    if setup.state.is_main_process:
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        processes = setup.args.world_size
        print(
            f"CogFM {recipe.model.checkpoint or recipe.model.preset}: {params:,} parameters "
            f"({trainable:,} trainable); {len(setup.dataset):,} sequences of {setup.seq_len} tokens; "
            f"{processes} process{'es' if processes > 1 else ''}; {'bf16 autocast' if setup.bf16 else 'fp32'}; "
            f"{'compiled' if compile else 'not compiled'}"
            f"{f'; {setup.cpu_threads} CPU threads' if setup.cpu_threads else ''}; MFU against {peak_note}",
            flush=True,
        )
    return CogFMTrainer(
        model=model,
        args=setup.args,
        train_dataset=setup.dataset,
        processing_class=setup.tokenizer,
        curriculum=recipe.curriculum,
        loss_config=recipe.loss,
        guard=recipe.guard,
        marker_id=setup.tokenizer.convert_tokens_to_ids(BACK),
        newline_ids=newline_token_ids(setup.tokenizer),
        flops_per_token=train_flops_per_token(config, setup.seq_len),
        peak_flops=peak or None,
        checkpoint_files={RECIPE_FILE: recipe_text(recipe.to_dict())},
        compile=compile,
        averaging=recipe.averaging,
    )


def train(trainer: CogFMTrainer, setup: RunSetup) -> None:
    trainer.train(resume_from_checkpoint=setup.resume_from)
    if trainer.preemption.received:
        checkpoint = Path(setup.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
        raise Preempted(
            f"SIGTERM: stopped after step {trainer.state.global_step} and saved {checkpoint}; run the same command "
            "with --resume_from_checkpoint latest to continue exactly where it stopped"
        )


def pretrain(recipe: TrainRecipe) -> Path:
    """Train a fresh model of `model.preset`; evaluate in the loop and at the end; write the outputs."""
    if recipe.model.checkpoint:
        raise RecipeError(
            "model.checkpoint: pretraining starts from a fresh `model.preset`; to adapt a checkpoint use "
            "training/finetune_lora.py, to continue a run use --resume_from_checkpoint"
        )
    started = time.perf_counter()
    setup = prepare(recipe)
    set_seed(setup.args.seed)
    model = build_model(recipe, setup.tokenizer, setup.seq_len)
    trainer = make_trainer(recipe, model, setup)
    evaluation = LMEvalCallback(trainer, recipe.eval, setup.heldout) if recipe.eval.enabled else None
    if evaluation:
        trainer.add_callback(evaluation)

    train(trainer, setup)
    output = Path(setup.args.output_dir)
    save_final_checkpoint(trainer, setup.tokenizer, output)
    if setup.state.is_main_process:
        results = evaluation.final_results if evaluation else None
        heldout = evaluation.final_heldout if evaluation else None
        evaluated = evaluation.seconds if evaluation else (0.0, 0.0)
        timing = RunTiming(time.perf_counter() - started, setup.data_seconds, *evaluated)
        write_run_outputs(trainer, recipe, model, results, output, timing, heldout)
    setup.state.wait_for_everyone()
    return output


def finetune_lora(recipe: TrainRecipe) -> Path:
    """LoRA on a CogFM checkpoint (`model.checkpoint`), with the same trainer, sampler and loss. Saves the
    adapter to training.output_dir and, with `lora.merged_output_dir`, the merged Hub-ready model."""
    from peft import LoraConfig, get_peft_model

    checkpoint = recipe.model.checkpoint
    if not checkpoint:
        raise RecipeError("finetune_lora needs model.checkpoint: the CogFM checkpoint to adapt")
    if recipe.model.overrides:
        raise RecipeError("model.overrides: a LoRA run adapts model.checkpoint as it was saved; remove the overrides")
    # Checked here, not when the recipe loads: a shipped LoRA recipe names the checkpoint a pretraining run writes.
    if not (Path(checkpoint) / "config.json").is_file():
        raise RecipeError(
            f"{checkpoint!r} holds no config.json: give a saved checkpoint directory", "model.checkpoint"
        )
    # The model is loaded with this package's CogFM classes, never the checkpoint's copied code: a directory with
    # another model_type and an auto_map would otherwise run its own Python here unasked.
    model_type = json.loads((Path(checkpoint) / "config.json").read_text()).get("model_type")
    if model_type != CogFMConfig.model_type:
        raise RecipeError(
            f"{checkpoint} holds a {model_type!r} model; LoRA here adapts CogFM checkpoints", "model.checkpoint"
        )
    if damage := damaged_weights(Path(checkpoint)):
        raise RecipeError(f"{checkpoint}: {damage}", "model.checkpoint")
    if recipe.data.tokenizer.path not in (None, checkpoint):
        raise RecipeError(
            f"data.tokenizer.path: the data must be tokenized as the checkpoint was, with {checkpoint}'s tokenizer; "
            "leave the path out"
        )
    if not _built_with_tokenizer(Path(recipe.data.output_dir), Path(checkpoint)):
        # Tokenize with the checkpoint's tokenizer; replace() validates the path (it must hold tokenizer.json).
        # (A build the pretraining recipe made already has that tokenizer, and is used as it is.)
        tokenizer_section = dataclasses.replace(recipe.data.tokenizer, path=checkpoint)
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, tokenizer=tokenizer_section))
    setup = prepare(recipe)
    set_seed(setup.args.seed)
    base = CogFMForCausalLM.from_pretrained(checkpoint)
    lora = recipe.lora
    model = get_peft_model(
        base,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
        ),
    )
    trainer = make_trainer(recipe, model, setup)
    if recipe.eval.enabled:  # the adapted model, evaluated as pretraining evaluates (logged beside the loss)
        trainer.add_callback(LMEvalCallback(trainer, recipe.eval, setup.heldout))
    train(trainer, setup)
    output = Path(setup.args.output_dir)
    trainer.save_model(str(output))  # the adapter only: adapter_config.json names the base checkpoint
    if setup.state.is_main_process:
        write_recipe(output, recipe.to_dict())
        if lora.merged_output_dir:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(lora.merged_output_dir)
            setup.tokenizer.save_pretrained(lora.merged_output_dir)
            print(f"merged checkpoint: {Path(lora.merged_output_dir).resolve()}", flush=True)
        print(f"adapter: {output.resolve()}", flush=True)
    setup.state.wait_for_everyone()
    return output


def _built_with_tokenizer(data_dir: Path, checkpoint: Path) -> bool:
    """Whether `data_dir` holds a finished build tokenized by `checkpoint`'s tokenizer (the pretraining run's own
    data, when a LoRA recipe keeps the pretraining recipe's data section)."""
    built, saved = data_dir / "tokenizer" / "tokenizer.json", checkpoint / "tokenizer.json"
    if not ((data_dir / MANIFEST).is_file() and built.is_file() and saved.is_file()):
        return False
    return json.loads(built.read_text()) == json.loads(saved.read_text())


FLOWS: dict[str, Callable[[TrainRecipe], Path]] = {"pretrain": pretrain, "finetune_lora": finetune_lora}


def main(flow: str, argv: list[str] | None = None, default_recipe: str | Path | None = None) -> None:
    """`[RECIPE.yaml] [--field value ...]` for one of FLOWS; the recipe may be left out when a default is given
    (the entry scripts under training/ pass theirs). A recipe mistake exits with its message, no traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe_path = argv.pop(0) if argv and not argv[0].startswith("--") else default_recipe
    if recipe_path is None:
        sys.exit(f"usage: python -m cogfm_hf.training {flow} RECIPE.yaml [--field value ...]")
    try:
        FLOWS[flow](TrainRecipe.load(recipe_path, argv))
    except RecipeError as error:
        exit_with("recipe error", error)
    except GuardStop as stop:
        exit_with("", stop)
    except Preempted as stop:
        print(stop, file=sys.stderr, flush=True)
        sys.exit(128 + signal.SIGTERM)  # what a process ended by SIGTERM reports; schedulers requeue on it
