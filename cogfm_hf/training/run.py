"""The pretraining run behind `accelerate launch training/pretrain.py [RECIPE.yaml] [--field value ...]`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from transformers import AutoTokenizer, TrainingArguments, set_seed

from ..data import build, load_packed, load_recipe
from ..data.recipe import RecipeError
from ..modeling.configuration_cogfm import CogFMConfig
from ..modeling.modeling_cogfm import CogFMForCausalLM
from ..presets import train_flops_per_token
from ..tasks import BACK, Mixture
from .callbacks import RECIPE_FILE, SaveRecipeCallback
from .evaluation import LMEvalCallback, scores
from .model_card import read_data_report, write_model_card
from .plots import plot_accuracy_by_difficulty, plot_losses
from .recipe import TrainRecipe, load_train_recipe
from .trainer import CogFMTrainer

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "training" / "recipes" / "cogfm-tiny.yaml"
# bf16 dense peaks (no sparsity) of common accelerators, TFLOP/s.
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(value) -> bool:
    """`bf16: auto` uses bf16 autocast where the hardware does bf16 matmuls natively; elsewhere (like the
    AVX2-only CPUs this project's tests run on, where bf16 is ~35x slower) it stays in fp32."""
    if value != "auto":
        return bool(value)
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def set_cpu_threads(recipe: TrainRecipe) -> int:
    """`accelerate launch` without a config exports OMP_NUM_THREADS=1, which halves throughput on a 2-core
    machine; CPU runs use the cores of the machine shared among its processes instead (or the recipe's value)."""
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = recipe.cpu_threads or max(1, (os.cpu_count() or 1) // processes_here)
    torch.set_num_threads(threads)
    return threads


def peak_flops(recipe: TrainRecipe, bf16: bool) -> tuple[float, str]:
    if recipe.peak_tflops:
        return recipe.peak_tflops * 1e12, f"{recipe.peak_tflops} TFLOP/s (recipe)"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{tflops} TFLOP/s ({name} bf16 dense datasheet)"
        return 0.0, f"unknown for {name}: set peak_tflops in the recipe"
    dtype, size = (torch.bfloat16 if bf16 else torch.float32), 2048
    a = torch.randn(size, size, dtype=dtype)
    a @ a
    best = 0.0
    for _ in range(3):  # best of three: background load only ever makes a GEMM slower
        start = time.perf_counter()
        a @ a
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best, f"{best / 1e12:.3f} TFLOP/s (best measured {str(dtype).split('.')[-1]} {size}^2 GEMM on this CPU)"


def newline_token_ids(tokenizer) -> list[int]:
    return [i for token, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([token])]


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
    if "wandb" in (values["report_to"] if isinstance(values["report_to"], list) else [values["report_to"]]):
        # Without a key wandb would ask for one and crash a run without a terminal: log offline, sync later.
        if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_DIR", str(Path(values["output_dir"]).resolve()))
        Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    return TrainingArguments(bf16=bf16, **values), bf16


def build_model(recipe: TrainRecipe, tokenizer, seq_len: int) -> CogFMForCausalLM:
    preset = CogFMConfig.from_preset(recipe.model.preset)
    fields = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=max(preset.max_position_embeddings, seq_len),
    )
    config = CogFMConfig.from_preset(recipe.model.preset, **{**fields, **recipe.model.overrides})
    return CogFMForCausalLM(config)


def save_final_checkpoint(trainer: CogFMTrainer, tokenizer, output: Path) -> None:
    """Hub-ready: modeling code + auto_map, consolidated safetensors weights, tokenizer."""
    if not trainer.is_fsdp_enabled:
        trainer.save_model(str(output))
        return
    # FSDP checkpoints during the run are sharded (training/accelerate/fsdp.yaml); the final one is gathered
    # into full weights on the main process. (Not run here: no GPU was available to this work.)
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.accelerator.is_main_process:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(output, state_dict=state_dict)
        tokenizer.save_pretrained(output)


def prepare(recipe: TrainRecipe):
    """Arguments, distributed state, threads, built data and tokenizer: what every run needs first."""
    args, bf16 = training_arguments(recipe)  # first: it sets up the distributed state (CPU or GPU)
    state = PartialState()
    threads = set_cpu_threads(recipe) if args.use_cpu else None
    data_recipe = load_recipe(recipe.data)
    with state.main_process_first():  # the main process builds; the others then find it built
        data_dir = build(data_recipe)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    dataset = load_packed(data_dir / "packed")
    return args, bf16, state, threads, tokenizer, dataset


def make_trainer(
    recipe: TrainRecipe, model, tokenizer, dataset, args, bf16: bool, threads: int | None, state: PartialState
) -> CogFMTrainer:
    seq_len = len(dataset[0]["input_ids"])
    peak, peak_note = peak_flops(recipe, bf16)
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    if state.is_main_process:
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(
            f"CogFM {recipe.model.checkpoint or recipe.model.preset}: {params:,} parameters "
            f"({trainable:,} trainable); "
            f"{len(dataset):,} sequences of {seq_len} tokens; {args.world_size} process"
            f"{'es' if args.world_size > 1 else ''}; {'bf16 autocast' if bf16 else 'fp32'}"
            f"{f'; {threads} CPU threads' if threads else ''}; MFU against {peak_note}",
            flush=True,
        )
    return CogFMTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        curriculum=recipe.curriculum,
        loss_config=recipe.loss,
        guard=recipe.guard,
        marker_id=tokenizer.convert_tokens_to_ids(BACK),
        newline_ids=newline_token_ids(tokenizer),
        flops_per_token=train_flops_per_token(config, seq_len),
        peak_flops=peak or None,
        callbacks=[SaveRecipeCallback(recipe.to_dict())],
    )


def training_difficulty_tops(data_recipe: dict) -> dict[str, int]:
    """The hardest difficulty each task is trained on, from the data recipe's task sources."""
    tops: dict[str, int] = {}
    for source in data_recipe.get("sources", []):
        if source.get("type") == "tasks":
            for task, (_, high) in Mixture(source["mixture"]).difficulty_ranges().items():
                tops[task] = max(high, tops.get(task, high))
    return tops


def pretrain(recipe: TrainRecipe) -> Path:
    args, bf16, state, threads, tokenizer, dataset = prepare(recipe)
    set_seed(args.seed)
    model = build_model(recipe, tokenizer, len(dataset[0]["input_ids"]))
    trainer = make_trainer(recipe, model, tokenizer, dataset, args, bf16, threads, state)
    evaluation = LMEvalCallback(trainer, recipe.eval) if recipe.eval.enabled else None
    if evaluation:
        trainer.add_callback(evaluation)

    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    output = Path(args.output_dir)
    save_final_checkpoint(trainer, tokenizer, output)
    if state.is_main_process:
        (output / RECIPE_FILE).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        title = f"{recipe.model.preset}, {trainer.state.num_input_tokens_seen:,} tokens"
        plots = [
            plot_losses(trainer.state.log_history, output / "loss.png", f"{title}: training loss"),
            plot_accuracy_by_difficulty(
                trainer.state.log_history,
                output / "accuracy_by_difficulty.png",
                training_difficulty_tops(recipe.data),
                f"{title}: accuracy by difficulty",
            ),
        ]
        results = evaluation.final_results if evaluation else None
        summary = {
            "skipped_updates": trainer.skipped_updates,
            "global_step": trainer.state.global_step,
            "num_input_tokens_seen": trainer.state.num_input_tokens_seen,
        }
        if results:
            summary["final_eval"] = scores(results)
            (output / "eval_results.json").write_text(
                json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=2, default=str)
            )
            from lm_eval.utils import make_table

            print(
                "\n" + make_table(results) + ("\n" + make_table(results, "groups") if results.get("groups") else ""),
                flush=True,
            )
        (output / "training_summary.json").write_text(json.dumps(summary, indent=2))
        trainer.state.save_to_json(str(output / "trainer_state.json"))  # the log history: losses, evaluations
        card = write_model_card(
            output,
            recipe=recipe.to_dict(),
            model=model,
            state=trainer.state,
            data_report=read_data_report(Path(load_recipe(recipe.data).output_dir)),
            results=results,
            limit=recipe.eval.final_limit,
            plots=[p.name for p in plots if p is not None],
        )
        print(f"final checkpoint: {output.resolve()} (model card: {card.name})", flush=True)
    state.wait_for_everyone()
    return output


def finetune_lora(recipe: TrainRecipe) -> Path:
    """LoRA on a CogFM checkpoint (`model.checkpoint`), with the same trainer, sampler and loss. Saves the
    adapter to training.output_dir and, with `lora.merged_output_dir`, the merged Hub-ready model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if not recipe.model.checkpoint:
        raise RecipeError("finetune_lora needs model.checkpoint: the CogFM checkpoint to adapt")
    # The data must be tokenized exactly as the checkpoint was trained.
    recipe.data = {**recipe.data, "tokenizer": {**recipe.data.get("tokenizer", {}), "path": recipe.model.checkpoint}}
    args, bf16, state, threads, tokenizer, dataset = prepare(recipe)
    set_seed(args.seed)
    base = AutoModelForCausalLM.from_pretrained(recipe.model.checkpoint, trust_remote_code=True)
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
    trainer = make_trainer(recipe, model, tokenizer, dataset, args, bf16, threads, state)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    output = Path(args.output_dir)
    trainer.save_model(str(output))  # the adapter only: adapter_config.json names the base checkpoint
    if state.is_main_process:
        (output / RECIPE_FILE).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        if lora.merged_output_dir:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(lora.merged_output_dir)
            tokenizer.save_pretrained(lora.merged_output_dir)
            print(f"merged checkpoint: {Path(lora.merged_output_dir).resolve()}", flush=True)
        print(f"adapter: {output.resolve()}", flush=True)
    state.wait_for_everyone()
    return output


def main(argv: list[str] | None = None, run=pretrain, default_recipe: Path = DEFAULT_RECIPE) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe_path = argv.pop(0) if argv and not argv[0].startswith("--") else default_recipe
    try:
        recipe = load_train_recipe(recipe_path, argv)
        run(recipe)
    except RecipeError as error:
        sys.exit(f"recipe error: {error}")
