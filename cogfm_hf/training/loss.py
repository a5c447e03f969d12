"""The self-correction loss: how much each token counts.

Per predicted token (position t predicts token t+1):
- weight 1, except: tokens inside a written mistake get `error_weight` (0 masks them out), the BACK
  marker gets `marker_weight`, and the correction — the tokens after a marker up to the end of its line —
  gets `correction_weight`; end-of-sequence padding gets 0;
- optional unlikelihood on mistake tokens, alpha * -log(1 - p(token)) (Welleck et al. 2019), pushing
  mistakes down rather than merely not learning them;
- optional z-loss, z * logsumexp(logits)^2 (PaLM), keeping the softmax normaliser near 1.

Everything is returned as sums; the trainer divides by the total weight of the whole optimizer step
(all gradient-accumulation micro-batches, all ranks), so accumulation 4 x 2 gives the update of 1 x 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import Config


@dataclass
class LossConfig(Config):
    section: ClassVar[str] = "loss"

    error_weight: float = 1.0
    marker_weight: float = 1.0
    correction_weight: float = 1.0
    unlikelihood: float = 0.0
    z_loss: float = 0.0

    def validate(self) -> None:
        for name in ("error_weight", "marker_weight", "correction_weight", "unlikelihood", "z_loss"):
            if getattr(self, name) < 0:
                raise self.invalid(name, f"must be >= 0, got {getattr(self, name)!r}")


def token_weights(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    error_mask: torch.Tensor,
    marker_id: int,
    newline_ids: torch.Tensor,
    config: LossConfig,
) -> dict[str, torch.Tensor]:
    """Masks and weights for the predicted tokens (shape [batch, seq - 1])."""
    targets = input_ids[:, 1:]
    valid = attention_mask[:, 1:].bool()
    error = error_mask[:, 1:].bool() & valid
    marker = (targets == marker_id) & valid
    # Correction = after a marker, to the end of that line. Lines end at newline tokens; within a line,
    # a position is a correction when a marker occurred earlier in the same line.
    newline = torch.isin(targets, newline_ids)
    line_start = torch.zeros_like(newline)
    line_start[:, 1:] = newline[:, :-1]
    line_start[:, 0] = True
    markers_so_far = torch.cumsum(marker.long(), dim=1) - marker.long()
    markers_at_line_start = torch.cummax(
        torch.where(line_start, markers_so_far, torch.zeros_like(markers_so_far)), dim=1
    ).values
    correction = (markers_so_far > markers_at_line_start) & valid & ~marker & ~error
    weights = valid.float()
    weights = torch.where(error, torch.full_like(weights, config.error_weight), weights)
    weights = torch.where(marker, torch.full_like(weights, config.marker_weight), weights)
    weights = torch.where(correction, torch.full_like(weights, config.correction_weight), weights)
    return {"weights": weights, "valid": valid, "error": error, "marker": marker, "correction": correction}


def self_correction_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, masks: dict[str, torch.Tensor], config: LossConfig
) -> dict[str, torch.Tensor]:
    """Summed loss terms (not yet normalised) and the per-token cross-entropy for logging."""
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    cross_entropy = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    cross_entropy = cross_entropy.view_as(targets)
    terms = {"cross_entropy": (cross_entropy * masks["weights"]).sum()}
    if config.unlikelihood > 0:
        probability = torch.exp(-cross_entropy).clamp(max=1 - 1e-6)
        terms["unlikelihood"] = config.unlikelihood * (-torch.log1p(-probability) * masks["error"]).sum()
    if config.z_loss > 0:
        terms["z_loss"] = config.z_loss * (torch.logsumexp(logits, dim=-1).pow(2) * masks["valid"]).sum()
    terms["total"] = sum(terms.values())
    terms["per_token_cross_entropy"] = cross_entropy.detach()
    return terms
