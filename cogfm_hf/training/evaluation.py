"""Evaluation: the lm-evaluation-harness tasks of `eval_tasks/`, run the one way the library runs lm-eval
(`run_lm_eval`): on a live model during training, or on a saved checkpoint loaded as the `lm_eval --model hf`
CLI loads it.

`LMEvalCallback` evaluates before the first step, every `eval.every_steps` optimizer steps and after the
last one, and logs through the Trainer, so the scores sit next to the loss (console, trainer_state.json,
wandb):

    eval/<task or group>/<metric>             e.g. eval/cogfm_chains_id/exact_match
    eval_difficulty/<task>/<difficulty>       generation accuracy by difficulty (the evaluate metric module)

The final evaluation (with `eval.final_limit`) is what the model card reports.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from datasets import Dataset
from lm_eval.models.huggingface import HFLM
from transformers import TrainerCallback

from ..config import Config
from ..paths import DIFFICULTY_METRIC_DIR, EVAL_TASKS_DIR
from .eval_model import AnswerLineHFLM
from .heldout import heldout_loss


@dataclass
class EvalConfig(Config):
    section: ClassVar[str] = "eval"

    tasks: list[str] = field(default_factory=lambda: ["cogfm_all"])  # lm-eval task / group names
    every_steps: int = 0  # in-loop cadence in optimizer steps; 0: only before and after training
    limit: int | None = 20  # items per task in-loop (None: all)
    final_limit: int | None = None  # items per task in the final evaluation, the model card's (None: all)
    batch_size: int = 96  # rows per decoding batch across tasks; 96-128 decoded fastest (docs/benchmarks.md)
    include_path: str | None = None  # lm-eval task folder; default: this repository's eval_tasks/
    enabled: bool = True
    # Packed sequences of the build kept out of training, whose loss every evaluation reports (eval/heldout_loss;
    # cogfm_hf.training.heldout); 0: none held out
    heldout_sequences: int = 0

    def validate(self) -> None:
        if not self.tasks or not all(self.tasks):
            raise self.invalid("tasks", f"must be a non-empty list of lm-eval task names, got {self.tasks!r}")
        for name in ("limit", "final_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise self.invalid(name, f"must be a positive integer or null, got {value!r}")
        if self.every_steps < 0:
            raise self.invalid("every_steps", f"must be an integer >= 0, got {self.every_steps!r}")
        if self.batch_size < 1:
            raise self.invalid("batch_size", f"must be >= 1, got {self.batch_size!r}")
        if self.heldout_sequences < 0:
            raise self.invalid("heldout_sequences", f"must be an integer >= 0, got {self.heldout_sequences!r}")
        if self.heldout_sequences and not self.enabled:
            raise self.invalid(
                "heldout_sequences", "the held-out loss is measured by the evaluations: set eval.enabled true, or 0"
            )


@functools.cache
def task_manager(tasks: tuple[str, ...], include_path: str):
    """lm-eval's TaskManager for `tasks`, made once per process. It indexes only `include_path` when every task is
    found there: indexing lm-eval's own thousands of task files as well takes ~20 s, at each evaluation."""
    from lm_eval.tasks import TaskManager

    ours = TaskManager(include_path=include_path, include_defaults=False)
    if set(tasks) <= set(ours.all_tasks):
        return ours
    return TaskManager(include_path=include_path)


def run_lm_eval(
    model: torch.nn.Module | str | Path,
    tasks: list[str],
    *,
    limit: int | None,
    batch_size: int,
    tokenizer=None,
    include_path: str | None = None,
    device: str | None = None,
    stop_at_answer_line: bool = True,
) -> dict:
    """lm-eval's results, with per-item samples. `model` is a live model (with its `tokenizer`; left in the
    train/eval mode it was in) or a checkpoint directory, loaded the way `lm_eval --model hf
    --model_args pretrained=DIR,trust_remote_code=True` loads it: fp32, on `device` (default: CUDA where there
    is a GPU, else the CPU) and with the checkpoint's own tokenizer. That runs the directory's own modeling code
    (trust_remote_code): give it checkpoints your own runs wrote, as the experiments do.
    `stop_at_answer_line` (default) ends each generation at its complete answer line (AnswerLineHFLM), with the
    scores of the plain `hf` model, which `False` runs."""
    from lm_eval import simple_evaluate

    manager = task_manager(tuple(tasks), include_path or str(EVAL_TASKS_DIR))
    model_class = AnswerLineHFLM if stop_at_answer_line else HFLM
    if not isinstance(model, torch.nn.Module):
        if tokenizer is not None:
            raise ValueError(f"{model}: a checkpoint is evaluated with its own tokenizer; pass no tokenizer")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        lm = model_class(
            pretrained=str(model), trust_remote_code=True, dtype="float32", batch_size=batch_size, device=device
        )
        return simple_evaluate(model=lm, tasks=list(tasks), limit=limit, log_samples=True, task_manager=manager)
    if device is not None:
        raise ValueError("a live model is evaluated on the device it is on; `device` is for checkpoints")
    was_training = model.training
    try:
        model.eval()
        lm = model_class(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, backend="causal")
        return simple_evaluate(model=lm, tasks=list(tasks), limit=limit, log_samples=True, task_manager=manager)
    finally:
        model.train(was_training)


def scores(results: dict) -> dict[str, float]:
    """Flat {"<task or group>/<metric>": value} from lm-eval results ("exact_match,extract_answer" -> "exact_match");
    lm-eval lists groups among the results too."""
    return {
        f"{name}/{key.split(',')[0]}": float(value)
        for name, values in results.get("results", {}).items()
        for key, value in values.items()
        if "," in key and "_stderr" not in key and isinstance(value, (int, float))
    }


def accuracy_by_difficulty(results: dict) -> dict[str, dict[int, float]]:
    """Generation exact match per reasoning task and difficulty, over all its buckets that were run,
    computed from the logged items by the `exact_match_by_difficulty` metric module."""
    import evaluate

    items: dict[str, tuple[list, list, list]] = {}
    for samples in results.get("samples", {}).values():
        for sample in samples:
            doc = sample["doc"]
            if doc.get("bucket") in (None, "self_correction", "next_step") or sample.get("filter") != "extract_answer":
                continue
            predictions, references, difficulties = items.setdefault(doc["task"], ([], [], []))
            predictions.append(sample["filtered_resps"][0])
            references.append(doc["answer"])
            difficulties.append(doc["difficulty"])
    if not items:
        return {}
    metric = evaluate.load(str(DIFFICULTY_METRIC_DIR))
    return {
        task: metric.compute(predictions=p, references=r, difficulties=d)["by_difficulty"]
        for task, (p, r, d) in sorted(items.items())
    }


class LMEvalCallback(TrainerCallback):
    """Runs `config.tasks` on the live model before training, every `config.every_steps` steps and at the
    last step, logging through `trainer.log`. Only the main process evaluates; under FSDP every process
    does (the forward passes need all shards) and they log the same numbers. `final_results` keeps the
    last evaluation's full lm-eval results, `final_heldout` its held-out losses (with `heldout` rows given)."""

    def __init__(self, trainer, config: EvalConfig, heldout: Dataset | None = None):
        self.trainer, self.config, self.heldout = trainer, config, heldout
        self.final_results: dict | None = None
        self.final_heldout: dict[str, float] | None = None
        self.seconds = (0.0, 0.0)  # spent evaluating in this process: in the loop, and after the last step

    def _evaluate(self, state, control, model, tokenizer, limit: int | None, final: bool = False) -> dict | None:
        if not (state.is_world_process_zero or self.trainer.is_fsdp_enabled):
            return None
        start = time.perf_counter()
        results = run_lm_eval(
            model,
            self.config.tasks,
            limit=limit,
            batch_size=self.config.batch_size,
            tokenizer=tokenizer,
            include_path=self.config.include_path,
        )
        logs = {f"eval/{key}": round(value, 4) for key, value in scores(results).items()}
        for task, by_difficulty in accuracy_by_difficulty(results).items():
            logs.update({f"eval_difficulty/{task}/{d}": round(v, 4) for d, v in by_difficulty.items()})
        logs["eval/items"] = sum(n.get("effective", 0) for n in results.get("n-samples", {}).values())
        if self.heldout is not None:
            losses = heldout_loss(model, self.heldout, self.config.batch_size, self.trainer.args.bf16)
            logs.update({"/".join(filter(None, ("eval/heldout_loss", k))): round(v, 5) for k, v in losses.items()})
            if final:
                self.final_heldout = losses
        seconds = time.perf_counter() - start
        in_loop, after_training = self.seconds
        self.seconds = (in_loop, after_training + seconds) if final else (in_loop + seconds, after_training)
        logs["eval/seconds"] = round(seconds, 1)
        should_log = control.should_log  # Trainer.log clears it: keep this step's training log
        self.trainer.log(logs)
        control.should_log = should_log
        self.trainer.exclude_from_throughput(seconds)
        return results

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step == 0:  # not on resume: the checkpoint's log history has it already
            self._evaluate(state, control, model, processing_class, self.config.limit)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if control.should_training_stop and state.global_step < state.max_steps:
            return  # stopping early (SIGTERM): the checkpoint matters, an evaluation now would delay it
        if state.global_step >= state.max_steps:
            self.final_results = self._evaluate(
                state, control, model, processing_class, self.config.final_limit, final=True
            )
        elif self.config.every_steps and state.global_step % self.config.every_steps == 0:
            self._evaluate(state, control, model, processing_class, self.config.limit)
