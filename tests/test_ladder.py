"""The scaling ladder (training/ladder.py): the held-out loss it fits, cooldowns branched from a trunk that train
exactly as runs made for their budget, the learning-rate and batch rule, the report on a ladder of known law, and
(slow) the quick ladder end to end."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from cogfm_hf.config import RecipeError
from cogfm_hf.data import load_packed
from cogfm_hf.experiments.ladder import (
    Ladder,
    Plan,
    SweepConfig,
    load_ladder,
    scaled,
    size_rule,
)
from cogfm_hf.experiments.ladder_report import optimal_tokens, write_report
from cogfm_hf.experiments.runs import write_record
from cogfm_hf.experiments.scaling_law import Law, predicted_accuracy
from cogfm_hf.paths import REPOSITORY
from cogfm_hf.training.heldout import split_heldout
from cogfm_hf.training.recipe import TrainRecipe
from cogfm_hf.training.run import pretrain

from .conftest import tiny_recipe

LADDER_RECIPE = REPOSITORY / "training" / "recipes" / "ladder.yaml"


def test_held_out_rows_are_a_fixed_choice_kept_out_of_training(data_dir):
    rows = load_packed(data_dir / "packed")
    train, heldout = split_heldout(rows, 10)
    again_train, again_heldout = split_heldout(rows, 10)
    assert len(heldout) == 10 and len(train) == len(rows) - 10
    assert heldout["input_ids"] == again_heldout["input_ids"] and train["input_ids"] == again_train["input_ids"]
    kept = {tuple(r) for r in train["input_ids"]}
    assert not any(tuple(r) in kept for r in heldout["input_ids"])  # packed rows of generated text are distinct
    assert split_heldout(rows, 0) == (rows, None)
    with pytest.raises(RecipeError, match="eval.heldout_sequences"):
        split_heldout(rows, len(rows))


def wsd_recipe(data_dir, output, steps: int, decay: int, **training) -> TrainRecipe:
    recipe = tiny_recipe(data_dir, output, max_steps=steps, warmup_steps=2, **training)
    recipe["training"].update(
        lr_scheduler_type="warmup_stable_decay", lr_scheduler_kwargs={"num_decay_steps": decay, "decay_type": "1-sqrt"}
    )
    recipe["curriculum"] = {"pacing": "uniform"}
    recipe["eval"] = {"tasks": ["cogfm_arithmetic_id"], "limit": 1, "final_limit": 2, "batch_size": 8}
    recipe["eval"]["heldout_sequences"] = 12
    return TrainRecipe.from_dict(recipe)


def test_a_cooldown_branched_from_the_trunk_trains_exactly_as_a_run_made_for_its_budget(data_dir, tmp_path):
    """The trunk is stable at step 8; resumed there with 10 steps and 2 of decay, the branch must end where a run
    trained straight to 10 steps ends: same weights, same held-out loss (what lets one trunk serve several D)."""
    pretrain(wsd_recipe(data_dir, tmp_path / "trunk", 16, 4, save_steps=8))
    pretrain(wsd_recipe(data_dir, tmp_path / "straight", 10, 2, save_steps=100))
    branch = wsd_recipe(
        data_dir,
        tmp_path / "branch",
        10,
        2,
        save_steps=100,
        resume_from_checkpoint=str(tmp_path / "trunk/checkpoint-8"),
    )
    pretrain(branch)
    summaries = {
        name: json.loads((tmp_path / name / "training_summary.json").read_text()) for name in ("straight", "branch")
    }
    assert summaries["branch"]["global_step"] == 10
    assert summaries["branch"]["heldout_loss"] == summaries["straight"]["heldout_loss"]
    assert set(summaries["branch"]["heldout_loss"]) == {"", "chains", "arithmetic"}
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    branched = load_file(tmp_path / "branch" / "model.safetensors")
    assert all(torch.equal(straight[k], branched[k]) for k in straight)
    trunk = json.loads((tmp_path / "trunk" / "training_summary.json").read_text())
    assert trunk["heldout_loss"][""] < summaries["branch"]["heldout_loss"][""]  # more tokens, lower held-out loss
    family = trunk["families"][0]
    assert family["family"] == "arithmetic" and family["split"] == "ID" and family["items"] > 0


def test_the_rule_is_a_power_of_size_through_the_two_swept_choices_clipped_to_the_sweep():
    assert scaled(4e6, [(1e6, 4e-3), (2e6, 2e-3)], 1e-3, 4e-3) == pytest.approx(1e-3)
    assert scaled(1.5e6, [(1e6, 4e-3), (2e6, 2e-3)], 1e-3, 4e-3) == pytest.approx(4e-3 * 1.5**-1)
    assert scaled(16e6, [(1e6, 4e-3), (2e6, 2e-3)], 1e-3, 4e-3) == pytest.approx(1e-3)  # clipped, not 2.5e-4
    sweep = SweepConfig(sizes=[3, 4], learning_rates=[1e-3, 2e-3, 4e-3], batch_sizes=[16, 32], tokens=1.5e6)
    choices = {3: {"learning_rate": 4e-3, "batch_size": 16}, 4: {"learning_rate": 2e-3, "batch_size": 16}}
    rule = size_rule(sweep, choices, {3: 1e6, 4: 2e6, 5: 4e6})
    assert rule[5] == {"learning_rate": 1e-3, "batch_size": 16}
    assert rule[3]["learning_rate"] == 4e-3


def test_every_budget_is_a_whole_number_of_steps_and_its_cooldown_starts_where_the_trunk_saves():
    config, base = load_ladder(LADDER_RECIPE)
    ladder = Ladder(config, base, REPOSITORY / "outputs" / "unused")
    for batch in config.sweep.batch_sizes:
        steps = [ladder.steps(b, batch) for b in config.budgets]
        trunk_save = np.gcd.reduce([s - c for s, c in steps[:-1]])
        for (total, cooldown), budget in zip(steps, config.budgets):
            assert cooldown == pytest.approx(config.cooldown_fraction * total)
            assert (total - cooldown) % trunk_save == 0
            assert abs(total * batch * ladder.seq_len / budget - 1) < 0.05
    plan = Plan(3, 0, 2e-3, 16, tuple(config.budgets))
    recipe = ladder.recipe(plan, config.budgets[0], ladder.runs_dir / plan.name(config.budgets[0]), None, None)
    assert recipe["model"]["overrides"]["hidden_size"] == 96 and recipe["model"]["overrides"]["num_hidden_layers"] == 3
    assert recipe["training"]["lr_scheduler_kwargs"]["num_decay_steps"] == ladder.steps(config.budgets[0], 16)[1]
    assert recipe["data"]["tokenizer"]["path"] == str(ladder.tokenizer_dir)  # one tokenizer for every run
    recipe["data"]["tokenizer"].pop("path")  # not trained in this test
    TrainRecipe.from_dict(recipe)


def test_the_recipe_refuses_a_ladder_it_cannot_fit(tmp_path):
    values = yaml.safe_load(LADDER_RECIPE.read_text())
    shutil.copy(LADDER_RECIPE.parent / values["base"], tmp_path / values["base"])
    cases = [
        ({"holdout": 3}, "holdout"),
        ({"budgets": [1.5e6, 4e6]}, "whole multiple"),
        ({"changes": {**values["changes"], "eval": {"heldout_sequences": 0}}}, "heldout_sequences"),
        ({"changes": {"training": {"lr_scheduler_type": "cosine"}, "eval": values["changes"]["eval"]}}, "warmup"),
        ({"forecast": {"family": "chess"}}, "family"),
    ]
    for change, message in cases:
        path = tmp_path / "ladder.yaml"
        path.write_text(yaml.safe_dump({**values, **change}))
        with pytest.raises(RecipeError, match=message):
            load_ladder(path)


def test_the_report_recovers_a_known_law_and_forecasts_the_held_out_size(tmp_path):
    """Records made from a known law (1% noise) and a known loss -> accuracy sigmoid: the fit on four sizes forecasts
    the fifth within the targets, and the report writes its tables and plots."""
    values = yaml.safe_load(LADDER_RECIPE.read_text())
    shutil.copy(LADDER_RECIPE.parent / values["base"], tmp_path / values["base"])
    values.update(output_dir=str(tmp_path / "out"), report=str(tmp_path / "scaling.md"), bootstrap=30)
    (tmp_path / "ladder.yaml").write_text(yaml.safe_dump(values))
    config, base = load_ladder(tmp_path / "ladder.yaml")
    ladder = Ladder(config, base, tmp_path / "out")
    truth, task_truth = Law(1.2, 300.0, 0.35, 900.0, 0.4), Law(0.3, 200.0, 0.4, 700.0, 0.45)
    rng = np.random.default_rng(0)
    rule = {str(layers): {"learning_rate": 2e-3, "batch_size": 16} for layers in config.sizes}
    sweep = {str(s): {"learning_rate": 2e-3, "batch_size": 16, "run": None} for s in config.sweep.sizes}
    ladder.output_dir.mkdir(parents=True)
    (ladder.output_dir / "rule.json").write_text(json.dumps({"sweep": sweep, "rule": rule}))
    for layers in config.sizes:
        n = 13 * (32 * layers) ** 2 * layers
        for seed in [0, 1] if layers in config.sizes[:2] else [0]:
            for budget in config.budgets:
                d = 0.9 * budget
                plan = Plan(layers, seed, 2e-3, 16, tuple(config.budgets))
                task_loss = float(task_truth.loss(n, d))
                record = {
                    "layers": layers,
                    "seed": seed,
                    "learning_rate": 2e-3,
                    "batch_size": 16,
                    "budget": budget,
                    "branched_from": None if budget == config.budgets[-1] else "checkpoint-1",
                    "run": plan.name(budget),
                    "non_embedding_parameters": n,
                    "flops_per_token": 6 * n + 2e6,
                    "token_slots": budget,
                    "flops": (6 * n + 2e6) * budget,
                    "tokens": d,
                    "heldout_loss": {
                        "": float(truth.loss(n, d)) * (1 + 0.01 * rng.standard_normal()),
                        "addition_lsd": task_loss,
                    },
                    "families": [
                        {
                            "family": "addition_lsd",
                            "split": "ID",
                            "after": float(predicted_accuracy(task_loss, 8.0, 0.6, 0.25)),
                            "most_common": 0.25,
                        }
                    ],
                    "train_seconds": 60.0,
                    "precision": "bf16",
                    "device": "test",
                }
                run_dir = ladder.runs_dir / record["run"]
                run_dir.mkdir(parents=True)
                write_record(run_dir, record)
    report = write_report(ladder, "python training/ladder.py")
    text = report.read_text()
    assert "| L7-lr0.002-b16-seed0-6M |" in text
    summary = json.loads((tmp_path / "scaling" / "summary.json").read_text())
    (forecast,) = summary["forecasts"]
    assert abs(forecast["predicted_loss"] / forecast["loss"] - 1) < 0.03
    assert abs(forecast["predicted_accuracy"] - forecast["accuracy"]) < 0.05
    assert summary["law"]["alpha"] == pytest.approx(truth.alpha, abs=0.15)
    for plot in ("loss_vs_compute.png", "predicted_vs_actual.png"):
        assert (tmp_path / "scaling" / plot).stat().st_size > 10_000
    assert optimal_tokens(truth, 6e9) == pytest.approx(
        float(truth.compute_optimal(6 * 6e9 * optimal_tokens(truth, 6e9))[1]), rel=1e-6
    )


@pytest.mark.slow
def test_the_quick_ladder_runs_end_to_end_and_writes_its_report(tmp_path):
    values = yaml.safe_load(LADDER_RECIPE.read_text())
    shutil.copy(LADDER_RECIPE.parent / values["base"], tmp_path / values["base"])
    values["quick"].update(output_dir=str(tmp_path / "out"), report=str(tmp_path / "scaling.md"))
    (tmp_path / "ladder.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [sys.executable, "training/ladder.py", str(tmp_path / "ladder.yaml"), "--quick"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "scaling.md").read_text()
    assert "## The forecast of the held-out size" in text and "| L5-" in text
    for plot in ("loss_vs_compute.png", "predicted_vs_actual.png"):
        assert (tmp_path / "scaling" / plot).is_file()
