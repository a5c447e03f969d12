"""CogFMTrainer: transformers' Trainer with the curriculum sampler, the self-correction loss, per-task
logging, and a guard that skips bad updates."""

from __future__ import annotations

import math
import time

import torch
from transformers import Trainer

from ..data.pack import TASK_VOCAB
from .loss import LossConfig, self_correction_loss, token_weights
from .recipe import CurriculumConfig, GuardConfig
from .sampler import CurriculumSampler

MAX_LOGGED_DIFFICULTY = 16


def collate_packed(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Packed rows (cogfm_hf.data.pack) -> tensors. No attention_mask goes to the model: restarting
    position_ids make transformers build a per-document causal mask."""
    batch = {
        key: torch.tensor([row[key] for row in rows], dtype=torch.long)
        for key in ("input_ids", "position_ids", "attention_mask", "error_mask", "task_ids", "difficulties")
    }
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


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
        **kwargs,
    ):
        kwargs.setdefault("data_collator", collate_packed)
        super().__init__(*args, **kwargs)
        self.curriculum = curriculum or CurriculumConfig()
        self.loss_config = loss_config or LossConfig()
        self.guard = guard or GuardConfig()
        self.marker_id = marker_id
        self.newline_ids = torch.tensor(newline_ids, dtype=torch.long)
        self.train_sampler: CurriculumSampler | None = None
        self._reset_log_sums()
        self._step_loss = 0.0
        self._loss_ema: float | None = None
        self.skipped_updates: list[dict] = []
        # MFU = flops_per_token x tokens/s / (peak_flops x processes); None leaves it out of the logs.
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self._last_log_time: float | None = None

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
        outputs = model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], use_cache=False)
        masks = self._masks(inputs)
        terms = self_correction_loss(outputs.logits, inputs["input_ids"], masks, self.loss_config)
        denominator = num_items_in_batch if num_items_in_batch is not None else masks["weights"].sum()
        loss = terms["total"] / denominator.clamp(min=1e-6)
        if self.model.training and self.args.world_size > 1:
            loss = loss * self.args.world_size  # DDP averages gradients over ranks; the denominator already spans them
        if self.model.training:
            self._accumulate_log_sums(inputs, masks, terms)
        return (loss, outputs) if return_outputs else loss

    # -- logging ----------------------------------------------------------------------------------
    def _reset_log_sums(self):
        tasks, levels = len(TASK_VOCAB), MAX_LOGGED_DIFFICULTY + 1
        self._log_sums = {
            "task_loss": torch.zeros(tasks, dtype=torch.float64),
            "task_tokens": torch.zeros(tasks, dtype=torch.float64),
            "level_loss": torch.zeros(levels, dtype=torch.float64),
            "level_tokens": torch.zeros(levels, dtype=torch.float64),
            "terms": torch.zeros(5, dtype=torch.float64),  # ce, unlikelihood, z, error-token ce, error tokens
            "tokens": torch.zeros(1, dtype=torch.float64),
        }

    def _accumulate_log_sums(self, inputs, masks, terms):
        with torch.no_grad():
            ce = terms["per_token_cross_entropy"].double().cpu()
            valid = masks["valid"].cpu()
            tasks = inputs["task_ids"][:, 1:].cpu()
            levels = inputs["difficulties"][:, 1:].clamp(max=MAX_LOGGED_DIFFICULTY).cpu()
            sums = self._log_sums
            sums["task_loss"].index_add_(0, tasks[valid], ce[valid])
            sums["task_tokens"].index_add_(0, tasks[valid], torch.ones_like(ce[valid]))
            sums["level_loss"].index_add_(0, levels[valid], ce[valid])
            sums["level_tokens"].index_add_(0, levels[valid], torch.ones_like(ce[valid]))
            error = masks["error"].cpu()
            sums["terms"] += torch.tensor(
                [
                    (ce * valid).sum().item(),
                    float(terms.get("unlikelihood", 0.0)),
                    float(terms.get("z_loss", 0.0)),
                    ce[error].sum().item(),
                    error.sum().item(),
                ],
                dtype=torch.float64,
            )
            sums["tokens"] += valid.sum().item()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add what the Trainer does not know
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
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Kept on the device: read once per optimizer step (by the guard), not once per micro-batch.
        self._step_loss = self._step_loss + loss.detach().double()
        return loss

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if not getattr(optimizer, "_cogfm_guarded", False):
            real_step = optimizer.step

            def guarded_step(*args, **kwargs):
                if self._update_is_bad():
                    return None
                return real_step(*args, **kwargs)

            optimizer.step = guarded_step
            optimizer._cogfm_guarded = True
        return optimizer

    def _update_is_bad(self) -> bool:
        """Decide (identically on every rank) whether to skip this optimizer step."""
        step_loss, self._step_loss = self._step_loss, 0.0
        if not self.guard.enabled:
            return False
        loss = torch.as_tensor(step_loss, dtype=torch.float64, device=self.args.device).reshape(1)
        grads_finite = torch.tensor(
            [all(torch.isfinite(p.grad).all() for p in self.model.parameters() if p.grad is not None)],
            dtype=torch.float64,
            device=self.args.device,
        )
        if self.args.world_size > 1:
            loss = self.accelerator.reduce(loss, reduction="mean")
            grads_finite = self.accelerator.reduce(
                grads_finite, reduction="mean"
            )  # < 1 if any rank saw a non-finite grad
        loss_value = loss.item()
        reason = None
        if not math.isfinite(loss_value) or grads_finite.item() < 1:
            reason = "non-finite loss or gradient"
        elif (
            self._loss_ema is not None
            and self.state.global_step >= self.guard.warmup_steps
            and loss_value > self.guard.spike_factor * self._loss_ema
        ):
            reason = f"loss {loss_value:.3f} > {self.guard.spike_factor} x recent {self._loss_ema:.3f}"
        if reason:
            self.skipped_updates.append({"step": self.state.global_step + 1, "reason": reason})
            if self.args.should_log:
                print(f"[guard] skipped the update of step {self.state.global_step + 1}: {reason}", flush=True)
            return True
        decay = self.guard.ema_decay
        self._loss_ema = loss_value if self._loss_ema is None else decay * self._loss_ema + (1 - decay) * loss_value
        return False
