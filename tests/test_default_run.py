"""The main job (`make train`, training/recipes/cogfm-tiny.yaml) in miniature: the default recipe's model, mixture,
position coupling, loss and evaluation, with fewer problems and a few steps; its ending and model card state,
per task family, before → after beside the most-common-answer level. (The figures of the full run are in the README,
measured by a run, not by this test.)"""

import json
import re

import yaml

from cogfm_hf.paths import REPOSITORY
from cogfm_hf.training.recipe import TrainRecipe
from cogfm_hf.training.run import pretrain

DEFAULT_RECIPE = REPOSITORY / "training" / "recipes" / "cogfm-tiny.yaml"


def test_the_default_recipe_ends_with_what_the_model_learned_per_family(tmp_path, capsys):
    values = yaml.safe_load(DEFAULT_RECIPE.read_text())
    for source in values["data"]["sources"]:  # the same sources and mixture, smaller
        source.update({"max_files": 3} if source["type"] == "python_stdlib" else {"num_examples": 500})
    values["data"].update(output_dir=str(tmp_path / "data"), workers=1)
    values["data"]["tokenizer"]["train_chars"] = 100_000
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(values))
    output = tmp_path / "out"
    overrides = ["--max_steps", "2", "--output_dir", str(output), "--report_to", "none", "--save_steps", "2"]
    overrides += ["--eval.limit", "1", "--eval.final_limit", "2", "--eval.every_steps", "0"]
    pretrain(TrainRecipe.load(recipe_file, overrides))

    printed = capsys.readouterr().out
    ending = printed[printed.rindex("final checkpoint:") :].splitlines()
    assert ending[0] == f"final checkpoint: {output.resolve()}"
    assert ending[1].startswith(
        "What the model learned: held-out test sets, greedy, exact match in %, before training"
    )
    # How long it took, and where the time went (the in-loop evaluation's share is what the budget watches).
    summary = json.loads((output / "training_summary.json").read_text())["seconds"]
    assert re.fullmatch(
        r"took \d+ min \d\d s in this process: data \d+ min \d\d s, training and set-up \d+ min \d\d s, "
        r"evaluation in the loop \d+ min \d\d s \(\d+% of the time\), final evaluation \d+ min \d\d s",
        ending[-2],
    )
    assert summary["total"] > summary["data"] + summary["evaluation_in_loop"] + summary["evaluation_final"]
    assert summary["data"] > 0 and summary["evaluation_in_loop"] > 0 and summary["evaluation_final"] > 0
    assert ending[-1] == (
        f"model card: {output / 'README.md'}; plots: {output / 'loss.png'}, {output / 'accuracy_by_difficulty.png'}"
    )
    final = json.loads((output / "eval_results.json").read_text())
    trained = {mixture["task"] for mixture in values["data"]["sources"][1]["mixture"]}
    rows = {tuple(line.split()[:2]): line for line in ending if re.match(r"^\w+ +(ID|OOD) ", line)}
    assert set(rows) == {(family, split) for family in trained for split in ("ID", "OOD")}
    for (family, split), line in rows.items():
        after = final["groups"][f"cogfm_{family}_{split.lower()}"]["exact_match,extract_answer"]
        assert f"→ {100 * after:.1f}" in line
    # Coupling is on for sums only: the run's config says so, and addition's OOD buckets reach 16 digits.
    config = json.loads((output / "config.json").read_text())
    assert config["position_coupling"]["operator_token_ids"]
    assert any(line.startswith("addition_lsd by difficulty (trained up to 4): ") and "| 5:" in line for line in ending)
    assert "## What it learned" in (output / "README.md").read_text()
