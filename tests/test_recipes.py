"""The one config mechanism (cogfm_hf.config): every recipe section is typed, rejects unknown keys and wrong types
naming the section and field, round-trips through plain data, and takes dotted command-line overrides."""

import re
import subprocess
import sys

import pytest
import yaml

from cogfm_hf import CogFMConfig
from cogfm_hf.config import RecipeError
from cogfm_hf.experiments.arms import load_ablation
from cogfm_hf.paths import REPOSITORY
from cogfm_hf.training.loss import LossConfig
from cogfm_hf.training.recipe import TrainRecipe

from .conftest import tiny_recipe

RECIPES = REPOSITORY / "training" / "recipes"

# (path of the section in the recipe mapping, its name in errors, a field, a value of the wrong type for it)
TRAIN_SECTIONS = [
    ((), "", "peak_tflops", "fast"),
    (("model",), "model", "preset", 3),
    (("data",), "data", "workers", "two"),
    (("data", "clean"), "data.clean", "min_chars", "few"),
    (("data", "filters"), "data.filters", "prose", 5),
    (("data", "dedup"), "data.dedup", "threshold", "high"),
    (("data", "decontamination"), "data.decontamination", "enabled", "yes"),
    (("data", "tokenizer"), "data.tokenizer", "vocab_size", 1.5),
    (("data", "pack"), "data.pack", "seq_len", "long"),
    (("data", "sources", 0), "data.sources[0] (reasoning)", "num_examples", "many"),
    (("data", "sources", 0, "mixture", 0), "data.sources[0] (reasoning).mixture[0]", "weight", "heavy"),
    (("training",), "training", "max_steps", "many"),
    (("curriculum",), "curriculum", "c0", [0.1]),
    (("loss",), "loss", "error_weight", "none"),
    (("guard",), "guard", "enabled", 1),
    (("eval",), "eval", "tasks", 5),
    (("lora",), "lora", "r", "eight"),
]


def section_of(recipe: dict, path: tuple) -> dict:
    for part in path:
        recipe = recipe.setdefault(part, {}) if isinstance(part, str) else recipe[part]
    return recipe


@pytest.mark.parametrize("path, name, field, wrong", TRAIN_SECTIONS, ids=[s[1] or "top" for s in TRAIN_SECTIONS])
def test_every_training_recipe_section_rejects_unknown_keys_and_wrong_types(tmp_path, path, name, field, wrong):
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    unknown = yaml.safe_load(yaml.safe_dump(recipe))
    section_of(unknown, path)["colour"] = "red"
    if name == "training":  # TrainingArguments' own fields
        expected = r"^training\.colour: not a transformers.TrainingArguments field"
    else:
        expected = rf"^{re.escape(name + ': ' if name else '')}unknown field\(s\) \['colour'\]"
    with pytest.raises(RecipeError, match=expected):
        TrainRecipe.from_dict(unknown)

    mistyped = yaml.safe_load(yaml.safe_dump(recipe))
    section_of(mistyped, path)[field] = wrong
    with pytest.raises(RecipeError, match=rf"^{re.escape(f'{name}.{field}' if name else field)}: expected"):
        TrainRecipe.from_dict(mistyped)


def test_recipe_file_errors_name_the_file_section_and_field(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "data", tmp_path / "out")))
    with pytest.raises(RecipeError, match=r"recipe.yaml: curriculum.pacing: must be one of .*got 'fast'"):
        TrainRecipe.load(path, ["--curriculum.pacing", "fast"])
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "training" / "pretrain.py"), str(path), "--guard.spike_factor", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "recipe error: " in result.stderr and "recipe.yaml: guard.spike_factor: must be > 1" in result.stderr


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a["arms"]["baseline"].update(colour="red"), r"arms.baseline: unknown field\(s\) \['colour'\]"),
        (lambda a: a["arms"]["retry_p0.1"].update(retry_p="often"), r"arms.retry_p0.1.retry_p: expected"),
        (lambda a: a["quick"].update(colour="red"), r"quick: unknown field\(s\) \['colour'\]"),
        (lambda a: a["quick"].update(seeds="zero"), r"quick.seeds: expected"),
        (lambda a: a.update(colour="red"), r"ablation.yaml: unknown field\(s\) \['colour'\]"),
        (lambda a: a.update(target="half"), r"ablation.yaml: target: expected"),
    ],
)
def test_every_ablation_recipe_section_rejects_unknown_keys_and_wrong_types(tmp_path, edit, message):
    ablation = yaml.safe_load((RECIPES / "ablation.yaml").read_text())
    edit(ablation)
    (tmp_path / "ablation.yaml").write_text(yaml.safe_dump(ablation))
    (tmp_path / "ablation-base.yaml").write_text((RECIPES / "ablation-base.yaml").read_text())
    with pytest.raises(RecipeError, match=message):
        load_ablation(tmp_path / "ablation.yaml")


@pytest.mark.parametrize(
    "name", ["cogfm-tiny.yaml", "lora-tiny.yaml", "ablation-base.yaml", "generalisation-base.yaml"]
)
def test_shipped_recipes_round_trip_through_plain_data(name):
    recipe = TrainRecipe.load(RECIPES / name)
    plain = recipe.to_dict()
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # what cogfm_recipe.yaml in a checkpoint holds
    assert TrainRecipe.from_dict(plain) == recipe


def test_overrides_set_training_arguments_and_section_fields():
    recipe = TrainRecipe.load(
        RECIPES / "cogfm-tiny.yaml",
        ["--max_steps", "7", "--curriculum.pacing=linear", "--data.pack.seq_len", "64", "--learning_rate", "5e-4"],
    )
    assert recipe.training["max_steps"] == 7 and recipe.curriculum.pacing == "linear"
    assert recipe.data.pack.seq_len == 64
    assert recipe.training["learning_rate"] == 5e-4  # YAML 1.1 reads 5e-4 as a string; TrainingArguments gets a number


def test_a_section_built_in_python_validates_and_names_itself():
    with pytest.raises(RecipeError, match=r"^loss.marker_weight: must be >= 0"):
        LossConfig(marker_weight=-1.0)
    assert LossConfig.from_dict({"marker_weight": 2}).marker_weight == 2.0  # YAML's ints are numbers


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["guard"].update(spike_factor=float("nan")), r"^guard.spike_factor: expected a finite number"),
        (
            lambda r: r["training"].update(remove_unused_columns=True),
            r"^training.remove_unused_columns: must be false",
        ),
        (lambda r: r["model"]["overrides"].update(num_key_value_heads=3), r"^model.overrides: CogFMConfig.num_key_"),
        (lambda r: r["data"]["tokenizer"].update(path="/nowhere"), r"^data.tokenizer.path: '/nowhere' holds no"),
        (lambda r: r["training"].update(max_steps=0), r"^training.max_steps: must be > 0 \(or -1"),
        (lambda r: r["guard"].update(max_consecutive_skips=0), r"^guard.max_consecutive_skips: must be >= 1"),
        (
            lambda r: r["model"]["overrides"].update(vocab_size=100),
            r"^model.overrides.vocab_size: 100 is smaller than the tokenizer's vocabulary",
        ),
        (
            lambda r: r["model"]["overrides"].update(max_position_embeddings=16),
            r"^model.overrides.max_position_embeddings: 16 is shorter than the training sequences",
        ),
    ],
)
def test_values_that_would_be_ignored_or_fail_late_are_refused_up_front(tmp_path, edit, message):
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    recipe["guard"] = {}
    edit(recipe)
    with pytest.raises(RecipeError, match=message):
        TrainRecipe.from_dict(recipe)


def test_pretraining_refuses_a_checkpoint_it_would_not_start_from(tmp_path):
    from cogfm_hf.training.run import pretrain

    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    (tmp_path / "config.json").write_text("{}")
    recipe["model"]["checkpoint"] = str(tmp_path)
    with pytest.raises(RecipeError, match="model.checkpoint: pretraining starts from a fresh"):
        pretrain(TrainRecipe.from_dict(recipe))
    assert not (tmp_path / "data").exists()  # refused before any work


def test_lora_refuses_a_checkpoint_of_another_model_type_before_running_its_code(tmp_path):
    from cogfm_hf.training.run import finetune_lora

    (tmp_path / "config.json").write_text('{"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "evil.X"}}')
    (tmp_path / "tokenizer.json").write_text("{}")
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    recipe["model"] = {"checkpoint": str(tmp_path)}
    with pytest.raises(RecipeError, match=r"model.checkpoint: .* holds a 'llama' model; LoRA here adapts CogFM"):
        finetune_lora(TrainRecipe.from_dict(recipe))
    assert not (tmp_path / "data").exists()  # refused before any work


def test_command_line_overrides_of_the_ablation_and_the_data_build_are_checked(tmp_path):
    from cogfm_hf.experiments.ablation import Ablation

    config, base = load_ablation(RECIPES / "ablation.yaml")
    ablation = Ablation(config, base, ["--max_steps", "8", "--curriculum.pacing-fraction", "0.5"], tmp_path)
    assert ablation.base["training"]["max_steps"] == 8 and ablation.base["curriculum"]["pacing_fraction"] == 0.5
    with pytest.raises(RecipeError, match="curriculum.pacing_fraction: must be in"):
        Ablation(config, base, ["--curriculum.pacing_fraction", "2"], tmp_path)

    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "data", tmp_path / "out")["data"]))
    result = subprocess.run(
        [sys.executable, "-m", "cogfm_hf.data", "build", str(path), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "recipe error: data.workers: must be a positive integer, got 0" in result.stderr


def test_compile_auto_compiles_runs_long_enough_to_pay_for_it(tmp_path, monkeypatch):
    from transformers import TrainingArguments

    from cogfm_hf.training.run import COMPILE_MIN_STEPS, resolve_compile

    def arguments(max_steps):
        return TrainingArguments(str(tmp_path), max_steps=max_steps, use_cpu=True, report_to="none")

    tiny, canon, hybrid = (CogFMConfig.from_preset(f"cogfm-tiny{kind}") for kind in ("", "-canon", "-hybrid"))
    assert TrainRecipe.load(RECIPES / "cogfm-tiny.yaml").compile == "auto"
    assert resolve_compile("auto", arguments(COMPILE_MIN_STEPS), tiny) and resolve_compile("auto", arguments(-1), tiny)
    assert not resolve_compile("auto", arguments(COMPILE_MIN_STEPS - 1), tiny)
    assert resolve_compile(True, arguments(3), tiny) and not resolve_compile(False, arguments(10_000), tiny)
    # Mamba-2 layers recompile for every batch's longest document: auto leaves them eager; Canon layers compile.
    assert not resolve_compile("auto", arguments(10_000), hybrid) and resolve_compile(True, arguments(10), hybrid)
    assert resolve_compile("auto", arguments(10_000), canon)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with fsdp.yaml sets
    assert not resolve_compile("auto", arguments(10_000), tiny) and resolve_compile(True, arguments(10_000), tiny)


def test_experiment_recipes_pin_their_precision():
    """`bf16: auto` trains one command in bf16 on a CPU with native bf16 and in fp32 elsewhere: an experiment's
    numbers would depend on the machine."""
    experiments = {path.name: yaml.safe_load(path.read_text()) for path in RECIPES.glob("*.yaml")}
    experiments = {name: experiment for name, experiment in experiments.items() if "base" in experiment}
    assert {experiment["base"] for experiment in experiments.values()} >= {
        "ablation-base.yaml",
        "mixers-chains-base.yaml",
        "generalisation-base.yaml",
    }
    for name, experiment in experiments.items():
        base_precision = yaml.safe_load((RECIPES / experiment["base"]).read_text())["training"]["bf16"]
        precision = experiment.get("changes", {}).get("training", {}).get("bf16", base_precision)
        assert precision in (True, False), f"{name}: its base {experiment['base']} leaves bf16 to the machine"
