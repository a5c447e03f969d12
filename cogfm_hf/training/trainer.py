"""CogFMTrainer: transformers' Trainer with the curriculum sampler, the self-correction loss, per-task
logging, a guard that skips bad updates, and checkpoints that appear only when complete."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..config import RecipeError
from ..data.pack import TASK_VOCAB
from .averaging import WeightAveraging
from .checkpoints import STAGING, SaveOnSigterm, explain_save_error, publish
from .guard import SkipStepOptimizer
from .loss import LossConfig, self_correction_loss, token_weights
from .recipe import AveragingConfig, CurriculumConfig, GuardConfig
from .sampler import CurriculumSampler

MAX_LOGGED_DIFFICULTY = 16
GUARD_STATE_FILE = "guard_state.json"  # in every checkpoint: a resumed run's guard judges as a straight run's


def forward_and_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    masks: dict[str, torch.Tensor],
    loss_config: LossConfig,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The training forward pass and the self-correction loss terms (and the logits). One function, so that
    compiling it (`CogFMTrainer(compile=True)`) puts the loss in the model's graph: the float32 upcast, softmax,
    cross-entropy, unlikelihood and z-loss fuse into a few kernels instead of a pass over the logits each."""
    logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    return self_correction_loss(logits, input_ids, masks, loss_config), logits


def collate_packed(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Packed rows (cogfm_hf.data.pack) -> tensors. No attention_mask goes to the model: restarting
    position_ids make transformers build a per-document causal mask."""
    batch = {
        key: torch.tensor([row[key] for row in rows], dtype=torch.long)
        for key in ("input_ids", "position_ids", "attention_mask", "error_mask", "task_ids", "difficulties")
    }
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


class ReportSkippedUpdates(TrainerCallback):
    """Tells accelerate when the guard skipped the update, as its gradient scaler does on overflow: the Trainer
    and accelerate's scheduler wrapper then leave the LR schedule where it was, so a skipped step costs no
    schedule. (`AcceleratedOptimizer.step_was_skipped` reads `_is_overflow`; a test holds this to accelerate.)"""

    def __init__(self, trainer: "CogFMTrainer"):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        guard = self.trainer.update_guard
        if guard is not None and hasattr(self.trainer.optimizer, "_is_overflow"):
            self.trainer.optimizer._is_overflow = guard.last_step_skipped


class CogFMTrainer(Trainer):
    # compute_loss divides by the weight of the whole optimizer step itself.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args,
        curriculum: CurriculumConfig | None = None,
        loss_config: LossConfig | None = None,
        guard: GuardConfig | None = None,
        marker_id: int,
        newline_ids: list[int],
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
        checkpoint_files: dict[str, str] | None = None,
        compile: bool = False,
        averaging: AveragingConfig | None = None,
        **kwargs,
    ):
        kwargs.setdefault("data_collator", collate_packed)
        model = kwargs.get("model", args[0] if args else None)
        use_cache = getattr(getattr(model, "config", None), "use_cache", None)
        super().__init__(*args, **kwargs)
        # The Trainer writes TrainingArguments.use_cache (default False) into the model's config, and every
        # checkpoint would then load without a KV cache by default. compute_loss asks for no cache itself, so the
        # config keeps the model's own (inference) default.
        if use_cache is not None:
            self.model.config.use_cache = use_cache
        self.curriculum = curriculum or CurriculumConfig()
        self.loss_config = loss_config or LossConfig()
        self.guard = guard or GuardConfig()
        self.marker_id = marker_id
        self.newline_ids = torch.tensor(newline_ids, dtype=torch.long)
        self.train_sampler: CurriculumSampler | None = None
        self._reset_log_sums()
        self.update_guard: SkipStepOptimizer | None = None  # set by create_optimizer
        # MFU = flops_per_token x tokens/s / (peak_flops x processes); None leaves it out of the logs.
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self._last_log_time: float | None = None
        self._skips_logged = 0
        self.checkpoint_files = dict(checkpoint_files or {})  # name -> text, written into every checkpoint
        self.weight_averaging: WeightAveraging | None = None
        if averaging is not None and averaging.checkpoints:
            if self.is_fsdp_enabled:
                raise RecipeError(
                    "weight averaging reads whole parameters, which FSDP shards: train without `averaging` under FSDP",
                    "averaging",
                )
            self.weight_averaging = WeightAveraging(averaging, self.args.max_steps)
            self.add_callback(self.weight_averaging)  # first: the final evaluation sees the averaged weights
        self.preemption = SaveOnSigterm(reduce_sum=self._sum_over_processes if self.args.world_size > 1 else None)
        self.add_callback(self.preemption)
        self.add_callback(ReportSkippedUpdates(self))
        # Compiled here rather than through TrainingArguments.torch_compile, which would compile the model alone
        # (the loss outside its graph) and hand the compiled wrapper to the in-loop evaluation, whose generate()
        # calls change shape every token. self.model stays the plain module: checkpoints and evaluation see it.
        self._forward_and_loss = torch.compile(forward_and_loss) if compile else forward_and_loss

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        state_file = Path(checkpoint) / GUARD_STATE_FILE if checkpoint else None
        if state_file is not None and state_file.exists() and self.update_guard is not None:
            self.update_guard.load_guard_state(json.loads(state_file.read_text()))
        if checkpoint and self.weight_averaging is not None:
            self.weight_averaging.load(Path(checkpoint))

    def _sum_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value.to(self.args.device), reduction="sum").cpu()

    # -- checkpoints ------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint, written into `<output_dir>/.staging/checkpoint-N` and renamed into place once
        every process has written its part (cogfm_hf.training.checkpoints): a kill or a full disk mid-save never
        leaves a checkpoint that resume, rotation or a user would take for a whole one."""
        run_dir = Path(self._get_output_dir(trial=trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged = run_dir / STAGING / name
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)  # what an interrupted save of this step left
        self.accelerator.wait_for_everyone()
        self.args.output_dir = str(run_dir / STAGING)  # where the Trainer's save puts checkpoint-N
        try:
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                for file_name, text in self.checkpoint_files.items():
                    (staged / file_name).write_text(text)
                if self.update_guard is not None:
                    (staged / GUARD_STATE_FILE).write_text(json.dumps(self.update_guard.guard_state()))
                if self.weight_averaging is not None:
                    self.weight_averaging.save(staged)
        except OSError as error:
            raise explain_save_error(error, staged) from error
        finally:
            self.args.output_dir = str(run_dir)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish(staged, run_dir / name)
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    # -- data order -------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        samples_per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
        total_steps = (
            args.max_steps
            if args.max_steps > 0
            else math.ceil(len(dataset) * args.num_train_epochs / samples_per_step)
        )
        self.train_sampler = CurriculumSampler(
            dataset["difficulty"], samples_per_step, total_steps, self.curriculum, seed=args.seed
        )
        return self.train_sampler

    # -- loss -------------------------------------------------------------------------------------
    def _masks(self, batch: dict) -> dict[str, torch.Tensor]:
        return token_weights(
            batch["input_ids"],
            batch["attention_mask"],
            batch["error_mask"],
            self.marker_id,
            self.newline_ids.to(batch["input_ids"].device),
            self.loss_config,
        )

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """The total loss weight of this optimizer step: all micro-batches, all ranks."""
        total = sum(self._masks(batch)["weights"].sum() for batch in batch_samples)
        total = torch.as_tensor(total, dtype=torch.float32, device=device)
        if self.args.world_size > 1:
            total = self.accelerator.gather(total.reshape(1)).sum()
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        masks = self._masks(inputs)
        terms, logits = self._forward_and_loss(
            model, inputs["input_ids"], inputs["position_ids"], masks, self.loss_config
        )
        denominator = num_items_in_batch if num_items_in_batch is not None else masks["weights"].sum()
        loss = terms["total"] / denominator.clamp(min=1e-6)
        if self.model.training and self.args.world_size > 1:
            loss = loss * self.args.world_size  # DDP averages gradients over ranks; the denominator already spans them
        if self.model.training:
            self._accumulate_log_sums(inputs, masks, terms)
        return (loss, {"logits": logits}) if return_outputs else loss

    # -- logging ----------------------------------------------------------------------------------
    def _reset_log_sums(self):
        self._log_sums: dict[str, torch.Tensor] | None = None  # made on the loss's device by the first micro-batch

    def _accumulate_log_sums(self, inputs, masks, terms):
        """Adds this micro-batch to the logging sums where the loss lives, without a host sync: they are read once
        per logging window, in log()."""
        with torch.no_grad():
            ce = terms["per_token_cross_entropy"].double()
            if self._log_sums is None:
                tasks, levels = len(TASK_VOCAB), MAX_LOGGED_DIFFICULTY + 1
                self._log_sums = {
                    "task_loss": ce.new_zeros(tasks),
                    "task_tokens": ce.new_zeros(tasks),
                    "level_loss": ce.new_zeros(levels),
                    "level_tokens": ce.new_zeros(levels),
                    "terms": ce.new_zeros(5),  # ce, unlikelihood, z, error-token ce, error tokens
                    "tokens": ce.new_zeros(1),
                }
            sums, zero = self._log_sums, ce.new_zeros(())
            valid, error = masks["valid"].double(), masks["error"].double()
            valid_ce = torch.where(masks["valid"], ce, 0.0).reshape(-1)
            # Every position is added, weighted by validity: boolean indexing would sync to learn its size.
            tasks = inputs["task_ids"][:, 1:].reshape(-1).to(ce.device)
            levels = inputs["difficulties"][:, 1:].clamp(max=MAX_LOGGED_DIFFICULTY).reshape(-1).to(ce.device)
            sums["task_loss"].index_add_(0, tasks, valid_ce)
            sums["task_tokens"].index_add_(0, tasks, valid.reshape(-1))
            sums["level_loss"].index_add_(0, levels, valid_ce)
            sums["level_tokens"].index_add_(0, levels, valid.reshape(-1))
            sums["terms"] += torch.stack(
                [
                    valid_ce.sum(),
                    terms.get("unlikelihood", zero).detach().double(),
                    terms.get("z_loss", zero).detach().double(),
                    torch.where(masks["error"], ce, 0.0).sum(),
                    error.sum(),
                ]
            )
            sums["tokens"] += valid.sum()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._log_sums is not None:  # a training log: add what the Trainer does not know
            sums = {k: v.to(self.args.device) for k, v in self._log_sums.items()}
            if self.args.world_size > 1:
                sums = {k: self.accelerator.reduce(v, reduction="sum") for k, v in sums.items()}
            sums = {k: v.cpu() for k, v in sums.items()}
            for index, name in enumerate(TASK_VOCAB):
                if sums["task_tokens"][index] > 0:
                    logs[f"loss_task/{name}"] = round(
                        (sums["task_loss"][index] / sums["task_tokens"][index]).item(), 4
                    )
            for level in range(MAX_LOGGED_DIFFICULTY + 1):
                if sums["level_tokens"][level] > 0:
                    logs[f"loss_difficulty/{level}"] = round(
                        (sums["level_loss"][level] / sums["level_tokens"][level]).item(), 4
                    )
            tokens = max(1.0, sums["tokens"].item())
            ce, unlikelihood, z, error_ce, error_tokens = sums["terms"].tolist()
            logs["loss_parts/cross_entropy"] = round(ce / tokens, 4)
            if self.loss_config.unlikelihood > 0:
                logs["loss_parts/unlikelihood"] = round(unlikelihood / tokens, 4)
            if self.loss_config.z_loss > 0:
                logs["loss_parts/z_loss"] = round(z / tokens, 4)
            if error_tokens:
                logs["loss_parts/error_token_cross_entropy"] = round(error_ce / error_tokens, 4)
            logs["train_tokens"] = tokens
            now = time.perf_counter()
            if self._last_log_time is not None:
                tokens_per_second = tokens / (now - self._last_log_time)
                logs["tokens_per_second"] = round(tokens_per_second, 1)
                if self.flops_per_token and self.peak_flops:
                    logs["mfu"] = round(
                        self.flops_per_token * tokens_per_second / (self.peak_flops * self.args.world_size), 5
                    )
            self._last_log_time = now
            if self.train_sampler is not None:
                logs["curriculum/competence"] = round(self.train_sampler.competence(self.state.global_step), 4)
                logs["curriculum/pool_size"] = self.train_sampler.pool_size(self.state.global_step)
            logs["guard/skipped_updates"] = len(self.skipped_updates)
            # transformers puts a running average in place of a non-finite step's loss (0.0 when it opens the
            # logging window); the window's loss is NaN, as it was: the guard skipped that update.
            since_last_log = self.skipped_updates[self._skips_logged :]
            if any(skip["reason"].startswith("non-finite") for skip in since_last_log):
                logs["loss"] = float("nan")
            self._skips_logged = len(self.skipped_updates)
            self._reset_log_sums()
        super().log(logs, start_time)

    def exclude_from_throughput(self, seconds: float) -> None:
        """Time spent on something other than training (in-loop evaluation) does not count against tokens/s."""
        if self._last_log_time is not None:
            self._last_log_time += seconds

    def _inner_training_loop(self, *args, **kwargs):
        self._last_log_time = time.perf_counter()
        return super()._inner_training_loop(*args, **kwargs)

    # -- the guard --------------------------------------------------------------------------------
    @property
    def skipped_updates(self) -> list[dict]:
        """The updates the guard skipped: {"step": optimizer step, "reason": why}."""
        return self.update_guard.skipped if self.update_guard is not None else []

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.update_guard is None:
            raise RuntimeError(
                "CogFMTrainer's optimizer was not built through its create_optimizer (DeepSpeed builds its own): "
                "the update guard has nothing to wrap"
            )
        self.update_guard.record_loss(loss)
        return loss

    def create_optimizer(self, model=None):
        # Wrap once: a second train() finds the optimizer built (inside accelerate's wrapper) and super() returns it.
        needs_guard = self.optimizer is None or self.update_guard is None
        optimizer = super().create_optimizer(model)
        if needs_guard:
            # Wrapped before accelerate.prepare and create_scheduler: AcceleratedOptimizer and the scheduler go on top.
            self.optimizer = self.update_guard = SkipStepOptimizer(
                optimizer,
                self.guard,
                steps_done=lambda: self.state.global_step,
                reduce_mean=(
                    (lambda t: self.accelerator.reduce(t, reduction="mean")) if self.args.world_size > 1 else None
                ),
                announce=self.args.should_log,
            )
        return self.optimizer
