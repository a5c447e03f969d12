"""The data pipeline: sources -> clean -> filter -> deduplicate -> decontaminate -> tokenizer -> packed shards.

python -m cogfm_hf.data build RECIPE.yaml     # RECIPE: a data recipe, or a training recipe's `data:` section
"""

from ..config import RecipeError
from .pack import TASK_VOCAB, load_packed, unpack_documents
from .pipeline import build as _build_recipe
from .recipe import DataRecipe, load_recipe

__all__ = ["DataRecipe", "RecipeError", "load_recipe", "load_packed", "unpack_documents", "TASK_VOCAB", "build"]


def build(recipe, **kwargs):
    """Build a data recipe (a DataRecipe, a dict or a YAML path); see cogfm_hf.data.pipeline."""
    return _build_recipe(recipe if isinstance(recipe, DataRecipe) else load_recipe(recipe), **kwargs)
