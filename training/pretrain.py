"""Pretrain CogFM from a recipe.

accelerate launch training/pretrain.py                                   # the default recipe
accelerate launch training/pretrain.py RECIPE.yaml --max_steps 50 --output_dir DIR --seed 3
accelerate launch --config_file training/accelerate/cpu_ddp.yaml training/pretrain.py ...
"""

from pathlib import Path

from cogfm_hf.training.run import main

if __name__ == "__main__":
    main("pretrain", default_recipe=Path(__file__).parent / "recipes" / "cogfm-tiny.yaml")
