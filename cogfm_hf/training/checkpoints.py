"""Checkpoints that are whole or invisible, and the choice of the one to resume from.

A checkpoint is written into `<output_dir>/.staging/checkpoint-N` and renamed to `<output_dir>/checkpoint-N` only
once every process has written its part (`CogFMTrainer._save_checkpoint`). A kill or a full disk in the middle of
a save leaves at most a staging directory, which the next save removes: auto-resume, `save_total_limit` rotation
and users only ever see complete checkpoints. Directories written some other way (by an older version, by hand)
are still checked for the files a resume reads, and passed over with the reason when one is missing.

`--resume_from_checkpoint latest` (or `true`) resumes from the newest complete checkpoint of `output_dir`;
a path resumes from that checkpoint, which must be complete. SIGTERM saves a checkpoint and stops (`SaveOnSigterm`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from transformers import TrainerCallback

from ..config import RecipeError

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")  # transformers' own pattern (trainer_utils._re_checkpoint)
STAGING = ".staging"
LATEST = "latest"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model_fsdp_0")
_OPTIMIZER = ("optimizer.pt", "optimizer_0")


def missing_parts(checkpoint: Path, model_only: bool = False) -> list[str]:
    """What a resume from `checkpoint` would need and not find (empty: complete)."""
    missing = [] if (checkpoint / "trainer_state.json").is_file() else ["trainer_state.json"]
    if not any((checkpoint / name).exists() for name in _WEIGHTS):
        missing.append("model weights (" + " or ".join(_WEIGHTS) + ")")
    if not model_only and not any((checkpoint / name).exists() for name in _OPTIMIZER):
        missing.append("optimizer state (" + " or ".join(_OPTIMIZER) + ")")
    return missing


def damaged_weights(checkpoint: Path) -> str | None:
    """Why the safetensors weights of `checkpoint` cannot be read (truncated, not safetensors), or None. Reads
    only each file's header, which safetensors checks against the file's length."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(Path(checkpoint).glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as error:
            return f"{file.name} is damaged or truncated ({error})"
    return None


def check_sharded_parts(checkpoint: Path) -> None:
    """Sharded (FSDP) parts carry a pickled `.metadata` torch would unpickle in full on resume: vet it first."""
    from .fsdp import check_dcp_metadata

    for name in ("pytorch_model_fsdp_0", "optimizer_0"):
        if (checkpoint / name).is_dir():
            try:
                check_dcp_metadata(checkpoint / name)
            except ValueError as error:
                raise RecipeError(str(error), "training.resume_from_checkpoint") from None


def checkpoints_newest_first(output_dir: Path) -> list[Path]:
    found = [p for p in Path(output_dir).iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)), reverse=True)


def resolve_resume(
    requested: str | None, output_dir: str | Path, model_only: bool = False, announce: bool = True
) -> str | None:
    """The checkpoint directory to resume from, or None to start fresh. `latest` takes the newest complete
    checkpoint of `output_dir` and says which it took and which it passed over; a path must be complete."""
    if requested in (None, ""):
        return None
    if requested != LATEST:
        checkpoint = Path(requested)
        if not checkpoint.is_dir():
            raise RecipeError(
                f"training.resume_from_checkpoint: {checkpoint} is not a directory; give a checkpoint-N directory "
                f"of a run, or `{LATEST}` for the newest complete one in training.output_dir"
            )
        if missing := missing_parts(checkpoint, model_only):
            raise RecipeError(
                f"training.resume_from_checkpoint: {checkpoint} is incomplete (no {', '.join(missing)}); "
                f"resume from an earlier checkpoint, or use `{LATEST}`"
            )
        if damage := damaged_weights(checkpoint):
            raise RecipeError(
                f"{checkpoint}: {damage}; resume from another checkpoint", "training.resume_from_checkpoint"
            )
        check_sharded_parts(checkpoint)
        return str(checkpoint)
    output_dir = Path(output_dir)
    candidates = checkpoints_newest_first(output_dir) if output_dir.is_dir() else []
    for checkpoint in candidates:
        if missing := missing_parts(checkpoint, model_only):
            if announce:
                print(f"resume: passing over {checkpoint.name}, incomplete (no {', '.join(missing)})", flush=True)
            continue
        if damage := damaged_weights(checkpoint):
            if announce:
                print(f"resume: passing over {checkpoint.name}: {damage}", flush=True)
            continue
        check_sharded_parts(checkpoint)
        if announce:
            print(f"resume: from {checkpoint} (the newest complete checkpoint)", flush=True)
        return str(checkpoint)
    raise RecipeError(
        f"training.resume_from_checkpoint: `{LATEST}` found no complete checkpoint in {output_dir}"
        f"{f' ({len(candidates)} incomplete)' if candidates else ''}; start without it to train from scratch"
    )


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def recipe_changes(checkpoint: str | Path, recipe: dict, recipe_file: str) -> list[str]:
    """`field: before -> now` for each recipe field that differs from the recipe `checkpoint` was made with
    (empty when it has none recorded). The resume setting itself is not a change."""
    recorded = Path(checkpoint) / recipe_file
    if not recorded.is_file():
        return []
    before, now = _flatten(yaml.safe_load(recorded.read_text()) or {}), _flatten(recipe)
    return [
        f"{field}: {before.get(field, '(unset)')!r} -> {now.get(field, '(unset)')!r}"
        for field in sorted(set(before) | set(now))
        if field != "training.resume_from_checkpoint" and before.get(field) != now.get(field)
    ]


def clear_staging(output_dir: str | Path) -> None:
    """Remove what saves interrupted earlier left (main process, before training)."""
    shutil.rmtree(Path(output_dir) / STAGING, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Make the complete `staged` checkpoint visible as `final`, replacing an older one of the same step (a run
    resumed from before it). Each rename is atomic; between the two, the step has no checkpoint, never half of one."""
    if final.exists():
        retired = final.parent / STAGING / f"retired-{final.name}"
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(final, retired)
        os.replace(staged, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staged, final)
    try:  # leave no empty .staging in the run's directory (the final, Hub-ready checkpoint)
        staged.parent.rmdir()
    except OSError:
        pass  # not empty: leftovers of an interrupted save, which the next run clears


def explain_save_error(error: OSError, staged: Path) -> RuntimeError:
    """A failed save, said plainly: the disk being full is the usual cause and the raw error never says so."""
    shutil.rmtree(staged, ignore_errors=True)
    if error.errno == errno.ENOSPC:
        return RuntimeError(
            f"saving {staged.name} failed: the disk holding {staged.parent.parent} is full. Nothing was published: "
            "the checkpoints there are complete. Free space (or set training.save_total_limit) and resume with "
            f"--resume_from_checkpoint {LATEST}"
        )
    return RuntimeError(f"saving {staged.name} failed ({error}); the published checkpoints are untouched")


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint; the entry points exit with 128 + SIGTERM."""


class SaveOnSigterm(TrainerCallback):
    """SIGTERM (what Slurm and most schedulers send before they kill a job) finishes the current optimizer step,
    saves a checkpoint and stops training, so the job resumes exactly with `--resume_from_checkpoint latest`.
    Under several processes they agree on the step (one all-reduce per step), so all save the same checkpoint."""

    def __init__(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.reduce_sum = reduce_sum
        self.received = False
        self._previous_handler = None

    def _handle(self, signum, frame):
        self.received = True

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous_handler = signal.signal(signal.SIGTERM, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        received = self.received
        if self.reduce_sum is not None:
            received = bool(self.reduce_sum(torch.tensor([float(received)])).item())
        if received:
            self.received = True
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
