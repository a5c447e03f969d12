"""The held-out loss: packed sequences of the run's own build kept out of training (`eval.heldout_sequences`), and the
cross-entropy on them that every evaluation reports (`eval/heldout_loss`, and per task `eval/heldout_loss/<task>`).

The training loss is measured on the batch just trained on, and in a run that repeats data it is no longer a measure
of the distribution; the held-out loss is, and it is what a scaling ladder fits (cogfm_hf.experiments.ladder). The
rows are a fixed random choice (HELDOUT_SEED), the same for every run and seed on one build, so losses compare across
runs. A document longer than a packed row spans rows and may be split between the two sides; generated problems are
a row or less.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from ..config import RecipeError
from ..data.pack import TASK_VOCAB

HELDOUT_SEED = 20241  # not the run's seed: every seed of a ladder or an ablation holds out the same rows


def split_heldout(dataset: Dataset, sequences: int) -> tuple[Dataset, Dataset | None]:
    """(training rows, held-out rows): `sequences` rows drawn at random with HELDOUT_SEED, the rest in their order."""
    if sequences == 0:
        return dataset, None
    if sequences >= len(dataset):
        raise RecipeError(
            f"{sequences} held-out sequences leave none of the build's {len(dataset)} to train on; lower it or build "
            "more data",
            "eval.heldout_sequences",
        )
    heldout = np.random.default_rng(HELDOUT_SEED).choice(len(dataset), size=sequences, replace=False)
    keep = np.ones(len(dataset), dtype=bool)
    keep[heldout] = False
    return dataset.select(np.flatnonzero(keep)), dataset.select(np.sort(heldout))


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, rows: Dataset, batch_size: int, bf16: bool) -> dict[str, float]:
    """Mean next-token cross-entropy over the rows' non-padding tokens, as the training loss counts them (no loss
    weights: a mistake in retry data counts as any token), overall ("") and per task (the task vocabulary's names).
    The model is left in the train/eval mode it was in."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sums, token_sums = np.zeros(len(TASK_VOCAB)), np.zeros(len(TASK_VOCAB))
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            input_ids, position_ids, attention_mask, task_ids = (
                torch.tensor(batch[key], dtype=torch.long, device=device)
                for key in ("input_ids", "position_ids", "attention_mask", "task_ids")
            )
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
            cross_entropy = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
            )
            valid = attention_mask[:, 1:].reshape(-1).double()
            tasks = task_ids[:, 1:].reshape(-1)
            loss_sums += (
                torch.zeros(len(TASK_VOCAB), dtype=torch.float64, device=device)
                .index_add_(0, tasks, cross_entropy.double() * valid)
                .cpu()
                .numpy()
            )
            token_sums += (
                torch.zeros(len(TASK_VOCAB), dtype=torch.float64, device=device)
                .index_add_(0, tasks, valid)
                .cpu()
                .numpy()
            )
    finally:
        model.train(was_training)
    losses = {"": float(loss_sums.sum() / max(token_sums.sum(), 1.0))}
    losses.update({TASK_VOCAB[i]: float(loss_sums[i] / token_sums[i]) for i in np.flatnonzero(token_sums)})
    return losses
