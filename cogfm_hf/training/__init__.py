"""Training: CogFMTrainer (curriculum sampler + self-correction loss + update guard), recipes, the pretraining run."""

from .guard import SkipStepOptimizer
from .loss import LossConfig, self_correction_loss, token_weights
from .recipe import CurriculumConfig, GuardConfig, TrainRecipe
from .sampler import CurriculumSampler
from .trainer import CogFMTrainer, collate_packed

__all__ = [
    "CogFMTrainer",
    "CurriculumSampler",
    "LossConfig",
    "CurriculumConfig",
    "GuardConfig",
    "SkipStepOptimizer",
    "TrainRecipe",
    "collate_packed",
    "self_correction_loss",
    "token_weights",
]
