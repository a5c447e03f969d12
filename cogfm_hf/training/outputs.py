"""What a training run writes besides the Trainer's own checkpoints.

Every `checkpoint-N` gets the resolved recipe (`cogfm_recipe.yaml`, written by CogFMTrainer before the checkpoint
is published, so a checkpoint is never without it). The final
checkpoint (the run's output directory) is Hub-ready — modeling code and `auto_map`, consolidated safetensors
weights, tokenizer — and also holds the recipe, `training_summary.json`, `trainer_state.json` (the log history),
`eval_results.json` and a model card (`README.md`) when the run evaluated, and the plots `loss.png` and
`accuracy_by_difficulty.png`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..hardware import describe_device
from .evaluation import scores
from .model_card import read_data_report, write_model_card
from .plots import plot_eval_history_by_difficulty, plot_losses
from .summary import (
    by_difficulty_lines,
    console_table,
    family_rows,
    initial_scores,
    markdown_table,
    self_correction_rows,
)

RECIPE_FILE = "cogfm_recipe.yaml"


@dataclass(frozen=True)
class RunTiming:
    """Where a run's wall time went, in seconds, in this process (a resumed run counts from its restart)."""

    total: float
    data: float  # building the data (~0 when it was built already)
    evaluation_in_loop: float  # before the first step and every `eval.every_steps`
    evaluation_final: float

    def describe(self) -> str:
        training = self.total - self.data - self.evaluation_in_loop - self.evaluation_final
        share = self.evaluation_in_loop / self.total if self.total else 0.0
        return (
            f"took {_minutes(self.total)} in this process: data {_minutes(self.data)}, training and set-up "
            f"{_minutes(training)}, evaluation in the loop {_minutes(self.evaluation_in_loop)} ({share:.0%} of the "
            f"time), final evaluation {_minutes(self.evaluation_final)}"
        )


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def recipe_text(recipe: dict) -> str:
    return yaml.safe_dump(recipe, sort_keys=False)


def write_recipe(directory: Path, recipe: dict) -> None:
    (Path(directory) / RECIPE_FILE).write_text(recipe_text(recipe))


def save_final_checkpoint(trainer, tokenizer, output: Path) -> None:
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


def write_run_outputs(
    trainer, recipe, model, results: dict | None, output: Path, timing: RunTiming, heldout: dict | None = None
) -> Path:
    """Everything beside the final weights (main process only), then the run's ending on the console: per task
    family, before training → after, beside the reference levels (summary.py), and where the card and plots are.
    `heldout`: the final held-out losses (cogfm_hf.training.heldout), kept in training_summary.json. Returns the
    model card's path."""
    write_recipe(output, recipe.to_dict())
    state = trainer.state
    title = f"{recipe.model.preset}, {state.num_input_tokens_seen:,} tokens"
    plots = [
        plot_losses(state.log_history, output / "loss.png", f"{title}: training loss"),
        plot_eval_history_by_difficulty(
            state.log_history,
            output / "accuracy_by_difficulty.png",
            recipe.data.task_difficulty_tops(),
            f"{title}: accuracy by difficulty",
        ),
    ]
    summary = {
        "skipped_updates": trainer.skipped_updates,
        "global_step": state.global_step,
        "num_input_tokens_seen": state.num_input_tokens_seen,
        # What a figure depends on besides the recipe: `bf16: auto` resolves per machine.
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "device": describe_device(),
        "seconds": asdict(timing),
    }
    if heldout is not None:
        summary["heldout_loss"] = heldout
    families, corrections, by_difficulty = [], [], []
    if results:
        before = initial_scores(state.log_history)
        families, corrections = family_rows(results, before), self_correction_rows(results, before)
        by_difficulty = by_difficulty_lines(results, recipe.data.task_difficulty_tops())
        summary["final_eval"] = scores(results)
        summary["families"] = [asdict(row) for row in families]  # the ending's table, per family and split
        (output / "eval_results.json").write_text(
            json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=2, default=str)
        )
        from lm_eval.utils import make_table

        groups = "\n" + make_table(results, "groups") if results.get("groups") else ""
        print("\n" + make_table(results) + groups, flush=True)
    (output / "training_summary.json").write_text(json.dumps(summary, indent=2))
    state.save_to_json(str(output / "trainer_state.json"))  # the log history: losses, evaluations
    card = write_model_card(
        output,
        recipe=recipe.to_dict(),
        model=model,
        state=state,
        data_report=read_data_report(Path(recipe.data.output_dir)),
        results=results,
        limit=recipe.eval.final_limit,
        plots=[p.name for p in plots if p is not None],
        learned=(
            f"Held-out test sets, greedy, exact match in %: before training (step 0, {recipe.eval.limit or 'all'} "
            f"items per task) → after ({recipe.eval.final_limit or 'all'} items per task). *Most common answer*: "
            "always giving the most common gold answer of the items run; *chance*: guessing among the answers the "
            "prompt names. Learned means clearing both.\n\n" + markdown_table(families, corrections)
            if families or corrections
            else None
        ),
    )
    ending = [f"\nfinal checkpoint: {output.resolve()}"]
    if families or corrections:
        ending += [
            f"What the model learned: held-out test sets, greedy, exact match in %, before training (step 0, "
            f"{recipe.eval.limit or 'all'} items per task) → after {state.global_step:,} steps and "
            f"{state.num_input_tokens_seen:,} tokens ({recipe.eval.final_limit or 'all'} items per task):",
            console_table(families, corrections),
            *by_difficulty,
        ]
    if heldout is not None:
        ending.append(
            f"held-out loss ({recipe.eval.heldout_sequences:,} sequences kept out of training): {heldout['']:.4f}"
        )
    ending.append(timing.describe())
    ending.append(f"model card: {card}; plots: {', '.join(str(output / p.name) for p in plots if p is not None)}")
    if wandb_run := sys.modules.get("wandb") and sys.modules["wandb"].run:
        wandb_run.finish()  # its closing lines come now, not after the ending
    print("\n".join(ending), flush=True)
    return card
