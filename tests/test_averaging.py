"""Final weight averaging (recipe section `averaging`): the final model is the mean of the weights at the averaged
steps, a run resumed inside the averaging window ends with the same weights, and bad settings name the field."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from cogfm_hf.config import RecipeError
from cogfm_hf.training.recipe import AveragingConfig, TrainRecipe

from .conftest import tiny_recipe
from .test_training import _trainer

AVERAGING = AveragingConfig(checkpoints=3, every_steps=2)  # steps 2, 4 and 6 of 6


def weights(folder):
    return load_file(folder / "model.safetensors")


class RecordWeights(TrainerCallback):
    """The weights right after each optimizer step, before any step-end callback (the averaging) touches them."""

    def __init__(self):
        self.at = {}

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.at[state.global_step + 1] = {n: p.detach().clone() for n, p in model.named_parameters()}


def test_the_final_model_is_the_mean_of_the_averaged_steps_and_resumes_exactly(data_dir, tmp_path):
    recorded = RecordWeights()
    steps = dict(max_steps=6, save_strategy="steps", save_steps=2)
    averaged = _trainer(data_dir, tmp_path / "averaged", callbacks=[recorded], averaging=AVERAGING, **steps)
    averaged.train()
    averaged.save_model(str(tmp_path / "averaged" / "final"))
    at = recorded.at

    final = weights(tmp_path / "averaged" / "final")
    for step in (2, 4):  # the run's checkpoints hold its own weights until the last step ...
        for name, value in weights(tmp_path / "averaged" / f"checkpoint-{step}").items():
            torch.testing.assert_close(value, at[step][name], rtol=0, atol=0)
    assert (tmp_path / "averaged" / "checkpoint-4" / "weight_average.safetensors").is_file()
    changed = 0
    for name, value in final.items():  # ... and it ends with the mean of its weights at steps 2, 4 and 6
        mean = (at[2][name].float() + at[4][name].float() + at[6][name].float()) / 3
        torch.testing.assert_close(value.float(), mean, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(value, at[6][name])
    assert changed > 0

    resumed = _trainer(data_dir, tmp_path / "averaged", averaging=AVERAGING, max_steps=6, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "averaged" / "checkpoint-4"))
    resumed.save_model(str(tmp_path / "resumed"))
    # Two CPU runs of the same steps differ by ~1e-8 (threaded kernels, measured in CI); a lost running mean would
    # differ by the size of a weight update.
    for name, value in weights(tmp_path / "resumed").items():
        torch.testing.assert_close(value, final[name], rtol=1e-5, atol=1e-6)


def test_bad_averaging_settings_name_the_field(data_dir, tmp_path):
    with pytest.raises(RecipeError, match="averaging.checkpoints: must be 0 .off. or >= 2"):
        AveragingConfig(checkpoints=1, every_steps=2)
    with pytest.raises(RecipeError, match="averaging.every_steps: is used only when"):
        AveragingConfig(every_steps=2)
    with pytest.raises(RecipeError, match="averaging.every_steps: must be >= 1"):
        AveragingConfig(checkpoints=3)
    recipe = tiny_recipe(data_dir, tmp_path)
    recipe["averaging"] = {"checkpoints": 4, "every_steps": 2}  # steps 0, 2, 4, 6 of 6: one before training
    with pytest.raises(RecipeError, match=r"averaging: .*training.max_steps, which must then be > 6 \(got 6\)"):
        TrainRecipe.from_dict(recipe)
