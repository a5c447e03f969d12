"""Trainer callbacks of the pretraining run."""

from __future__ import annotations

from pathlib import Path

import yaml
from transformers import TrainerCallback

RECIPE_FILE = "cogfm_recipe.yaml"


class SaveRecipeCallback(TrainerCallback):
    """Writes the resolved recipe into every checkpoint, so each one says exactly how it was made."""

    def __init__(self, recipe: dict):
        self.recipe = recipe

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                (checkpoint / RECIPE_FILE).write_text(yaml.safe_dump(self.recipe, sort_keys=False))
