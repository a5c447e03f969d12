"""The ablation runner (training/ablate.py): arms differ only in what they study, every arm trains on the same
token budget, the quick mode runs end to end and writes a well-formed report, and the statistics are right."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from cogfm_hf.config import RecipeError
from cogfm_hf.experiments.ablation import main as ablate_main
from cogfm_hf.experiments.ablation_report import (
    _changes,
    headroom_tasks,
    markdown,
    markers_on,
    paired_bootstrap,
    summarise,
    tokens_to_target,
)
from cogfm_hf.experiments.arms import (
    arm_recipe,
    filed_under_recipe_names,
    load_ablation,
    merged_changes,
    renamed_task,
)
from cogfm_hf.paths import REPOSITORY

from .conftest import tiny_recipe, write_recipe

ABLATION_RECIPE = REPOSITORY / "training" / "recipes" / "ablation.yaml"
# What each kind of change may touch in a resolved training recipe; `output_dir`s and the seed always differ.
ALWAYS = {"training.output_dir", "training.seed", "data.output_dir"}


def flatten(value, prefix=""):
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def differing(a: dict, b: dict) -> set[str]:
    flat_a, flat_b = flatten(a), flatten(b)
    return {key for key in flat_a.keys() | flat_b.keys() if flat_a.get(key) != flat_b.get(key)}


def expected_fields(changes: dict) -> set[str]:
    fields = set()
    if "retry_p" in changes:
        fields.add("data.sources.0.mixture.0.retry_p")
    if "retry_variant" in changes:
        fields.add("data.sources.0.mixture.0.retry_variant")
    fields |= {f"loss.{k}" for k in changes.get("loss", {})}
    fields |= {f"curriculum.{k}" for k in changes.get("curriculum", {})}
    fields |= {f"model.overrides.{k}" for k in flatten(changes.get("model", {}))}
    fields |= {f"training.{k}" for k in flatten(changes.get("schedule", {}))}
    fields |= {f"averaging.{k}" for k in changes.get("averaging", {})}
    return fields


def resolved(config, base, arm, tmp_path, choices=None, seed=0, learning_rate=None) -> dict:
    """An arm's full training recipe, as the runner resolves it."""
    return arm_recipe(
        base,
        merged_changes(config, arm, choices or {}),
        seed=seed,
        learning_rate=learning_rate or base["training"]["learning_rate"],
        run_dir=tmp_path / arm,
        data_root=tmp_path / "data",
        tokenizer_dir=tmp_path / "tok",
    )


def test_every_arm_of_the_recipe_differs_from_the_baseline_only_where_it_says(tmp_path):
    config, base = load_ablation(ABLATION_RECIPE)
    # Selections are decided on dev scores during a run; any choice must keep arms apart the same way.
    choices = {name: candidates[-1] for name, candidates in config.select.items()}

    def resolve(arm, seed=0):
        return resolved(config, base, arm, tmp_path, choices, seed, 2 * base["training"]["learning_rate"])

    baseline = resolve("baseline")
    assert differing(baseline, base) == {
        "training.output_dir",
        "training.learning_rate",
        "data.output_dir",
        "data.tokenizer.path",
    }
    for arm in config.arms:
        changes = merged_changes(config, arm, choices)
        fields = differing(resolve(arm, seed=1), baseline)
        assert fields - ALWAYS == expected_fields(changes), arm
        assert expected_fields(changes) or arm == "baseline", f"{arm} changes nothing"
    # Arms that study the data order train on exactly the baseline's data; retry arms on their own.
    assert resolve("curriculum_sqrt")["data"] == baseline["data"]
    assert resolve("retry_p0.3")["data"]["output_dir"] != baseline["data"]["output_dir"]
    combined = merged_changes(config, "combined", choices)
    assert combined["retry_p"] == 0.5 and combined["curriculum"] == config.arms["hard_anneal"].curriculum
    masked = merged_changes(config, "retry_masked", choices)
    assert masked == {"retry_p": 0.5, "loss": {"error_weight": 0.0}, "curriculum": {}}
    with pytest.raises(KeyError):  # not decided yet: the runner waits for the candidates' runs
        merged_changes(config, "combined", {})


@pytest.mark.parametrize("name", ["mixers-chains.yaml", "mixers-addition.yaml"])
def test_architecture_arms_change_only_the_model_and_keep_parameters_within_3_percent(tmp_path, name):
    from cogfm_hf import CogFMConfig
    from cogfm_hf.presets import count_parameters

    config, base = load_ablation(ABLATION_RECIPE.parent / name)
    recipes = {arm: resolved(config, base, arm, tmp_path) for arm in config.arms}
    counts = {}
    for arm, recipe in recipes.items():
        changes = merged_changes(config, arm, {})
        assert differing(recipe, recipes["baseline"]) - ALWAYS == expected_fields(changes), arm
        assert recipe["data"] == recipes["baseline"]["data"]  # the same data, so the same tokens
        model = recipe["model"]
        counts[arm] = count_parameters(CogFMConfig.from_preset(model["preset"], **model["overrides"]))
    assert set(counts) == {"baseline", "canon", "hybrid"}
    assert all(abs(count / counts["baseline"] - 1) < 0.03 for count in counts.values()), counts


def test_format_arms_change_only_the_task_and_its_evaluation_and_file_results_under_the_recipes_names(tmp_path):
    config, base = load_ablation(ABLATION_RECIPE.parent / "generalisation.yaml")

    baseline, reversed_, coupled = (
        resolved(config, base, arm, tmp_path) for arm in ("baseline", "reversed", "coupled_gaps")
    )
    in_loop = {f"eval.tasks.{i}" for i in range(len(base["eval"]["tasks"]))}
    assert differing(reversed_, baseline) - ALWAYS == {"data.sources.0.mixture.0.task"} | in_loop
    assert reversed_["data"]["sources"][0]["mixture"][0]["task"] == "addition_lsd"
    assert reversed_["eval"]["tasks"] == [t.replace("addition_", "addition_lsd_") for t in base["eval"]["tasks"]]
    assert differing(coupled, reversed_) - ALWAYS == {
        "model.position_coupling.stride",
        "model.position_coupling.train_column_gap",
    }
    assert coupled["data"] == reversed_["data"]  # the coupled arms share the reversed arm's data

    tasks = {"addition": "addition_lsd"}
    assert renamed_task("cogfm_addition_digits8_dev", tasks) == "cogfm_addition_lsd_digits8_dev"
    assert renamed_task("cogfm_chains_op2", tasks) == "cogfm_chains_op2"
    evaluation = {
        "test": {"cogfm_addition_lsd_digits8": {"task": "addition_lsd", "difficulty": 8, "correct": [1]}},
        "dev": {},
        "self_correction": {"cogfm_addition_lsd_self_correction": {"marker_rate": 1.0}},
    }
    recipe_name = {
        "cogfm_addition_lsd_digits8": "cogfm_addition_digits8",
        "cogfm_addition_lsd_self_correction": "cogfm_addition_self_correction",
    }
    assert filed_under_recipe_names(evaluation, recipe_name, tasks) == {
        "test": {"cogfm_addition_digits8": {"task": "addition", "difficulty": 8, "correct": [1]}},
        "dev": {},
        "self_correction": {"cogfm_addition_self_correction": {"marker_rate": 1.0}},
    }


def test_rope_arms_change_only_how_much_of_each_head_rotates(tmp_path):
    from cogfm_hf import CogFMConfig

    config, base = load_ablation(ABLATION_RECIPE.parent / "chains-wide.yaml")
    baseline = resolved(config, base, "baseline", tmp_path)
    for arm, factor in (("nope", 0.0), ("rope_quarter", 0.25)):
        recipe = resolved(config, base, arm, tmp_path)
        rope = "model.overrides.rope_parameters."
        assert differing(recipe, baseline) - ALWAYS == {
            rope + "partial_rotary_factor",
            rope + "rope_type",
            rope + "rope_theta",
        }
        assert recipe["data"] == baseline["data"]  # one build for the three arms
        model = CogFMConfig.from_preset(recipe["model"]["preset"], **recipe["model"]["overrides"])
        assert model.rope_parameters == {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": factor,
        }


def test_knob_arms_change_only_their_tasks_knobs_and_the_data_they_build(tmp_path):
    config, base = load_ablation(ABLATION_RECIPE.parent / "rules.yaml")
    baseline, few = (resolved(config, base, arm, tmp_path) for arm in ("baseline", "rules_16"))
    assert differing(few, baseline) - ALWAYS == {
        "data.sources.0.mixture.0.knobs.rules",
        "data.sources.0.mixture.1.knobs.rules",
    }
    assert [component["knobs"] for component in few["data"]["sources"][0]["mixture"]] == [{"rules": 16}] * 2
    assert merged_changes(config, "rules_64", {})["knobs"] == {"rules_map": {"rules": 64}, "rules_mod": {"rules": 64}}
    # The report names what the arm changes.
    assert _changes(merged_changes(config, "rules_16", {})) == "knobs.rules_map.rules=16, knobs.rules_mod.rules=16"
    text = (ABLATION_RECIPE.parent / "rules.yaml").read_text()
    (tmp_path / "rules-base.yaml").write_text((ABLATION_RECIPE.parent / "rules-base.yaml").read_text())
    for knobs, message in (
        ("{k: 3}", "arms.rules_16.knobs.rules_mod: sets the difficulty knob 'k'"),
        ("{rule: 3}", r"arms.rules_16.knobs.rules_mod: rules_mod: unknown knob\(s\) \['rule'\]"),
        ("{rules: 90}", "arms.rules_16.knobs.rules_mod: .*asks for 90 training rules; only 81 exist"),
    ):
        path = tmp_path / "rules.yaml"
        path.write_text(text.replace("rules_mod: {rules: 16}", f"rules_mod: {knobs}"))
        with pytest.raises(RecipeError, match=message):
            load_ablation(path)


def test_bad_ablation_recipes_name_the_field(tmp_path):
    text = ABLATION_RECIPE.read_text()

    def load(edited: str):
        path = tmp_path / "ablation.yaml"
        path.write_text(edited)
        (tmp_path / "ablation-base.yaml").write_text((ABLATION_RECIPE.parent / "ablation-base.yaml").read_text())
        return load_ablation(path)

    with pytest.raises(RecipeError, match=r"arms.retry_p0.1: unknown field\(s\) \['retry_q'\]"):
        load(text.replace("retry_p0.1: {retry_p: 0.1}", "retry_p0.1: {retry_q: 0.1}"))
    with pytest.raises(RecipeError, match="arms.combined.like: 'best_retri' is not another arm"):
        load(text.replace("like: [best_retry, best_curriculum]", "like: [best_retri, best_curriculum]"))
    with pytest.raises(RecipeError, match=r"arms.curriculum_sqrt.curriculum: unknown field\(s\) \['pace'\]"):
        load(text.replace("{pacing: sqrt, c0: 0.2, pacing_fraction: 0.8}}", "{pace: sqrt}}"))
    with pytest.raises(RecipeError, match=r"controls.curriculum_sqrt: unknown arm\(s\) \['random'\]"):
        load(text.replace("curriculum_sqrt: random_order", "curriculum_sqrt: random"))
    with pytest.raises(RecipeError, match="controls.random_order: an arm cannot be its own control"):
        load(text.replace("curriculum_sqrt: random_order", "random_order: random_order"))
    with pytest.raises(RecipeError, match="base: .*nowhere.yaml does not exist"):
        load(text.replace("base: ablation-base.yaml", "base: nowhere.yaml"))
    with pytest.raises(RecipeError, match=r"arms.retry_p0.1.model: .*canon_set"):
        load(text.replace("retry_p0.1: {retry_p: 0.1}", "retry_p0.1: {model: {canon_set: ABX}}"))


def _record(seed, correct, curve=()):
    return {"seed": seed, "test": {"t": {"correct": list(correct)}}, "curve": list(curve)}


def test_paired_bootstrap_and_tokens_to_target():
    rng = np.random.default_rng(0)
    base = [_record(s, [1, 0] * 50) for s in range(3)]
    same = paired_bootstrap([_record(s, [1, 0] * 50) for s in range(3)], base, ["t"], rng)
    assert same == (0.0, 0.0, 0.0)
    better = paired_bootstrap([_record(s, [1, 1] * 50) for s in range(3)], base, ["t"], rng)
    assert better[0] == pytest.approx(0.5) and 0.35 < better[1] < 0.5 < better[2] < 0.65
    curve = [
        {"tokens": 0, "exact_match": {"a": 0.1, "b": 0.9}},
        {"tokens": 500, "exact_match": {"a": 0.6, "b": 0.3}},
        {"tokens": 900, "exact_match": {"a": 0.7, "b": 0.5}},
    ]
    assert tokens_to_target({"curve": curve}, ["a"], 0.6) == 500
    assert tokens_to_target({"curve": curve}, ["a", "b"], 0.6) == 900
    assert tokens_to_target({"curve": curve}, ["b"], 0.95) is None


def _run_record(arm, seed, learning_rate, id_correct):
    """A completed run's record as the runner writes it: test items of one ID and one OOD task."""
    test = {
        "cogfm_addition_digits3": {"task": "addition", "difficulty": 3, "correct": id_correct, "marker": [0] * 100},
        "cogfm_addition_digits5": {"task": "addition", "difficulty": 5, "correct": [0] * 100, "marker": [0] * 100},
    }
    return {
        "arm": arm,
        "seed": seed,
        "learning_rate": learning_rate,
        "changes": {},
        "test": test,
        "dev": {},
        "curve": [],
        "self_correction": {},
        "num_input_tokens_seen": 1000,
        "token_slots": 1024,
        "global_step": 4,
        "train_seconds": 1.0,
        "eval_seconds": 1.0,
    }


def test_the_report_compares_an_arm_with_its_control_as_with_the_baseline():
    config, base = load_ablation(ABLATION_RECIPE)
    lr = base["training"]["learning_rate"]
    id_correct = {
        "baseline": [1, 0] * 50,
        "retry_p0.1": [0, 1] * 50,
        "random_order": [1, 0] * 50,
        "curriculum_sqrt": [1, 1] * 50,
    }
    records = [_run_record(arm, seed, lr, id_correct[arm]) for arm in id_correct for seed in (0, 1, 2)]
    summary = summarise(config, base, records)
    curriculum = summary["arms"]["curriculum_sqrt"]
    assert curriculum["control"] == "random_order" and curriculum["id_vs_control"][0] == pytest.approx(0.5)
    assert curriculum["ood_vs_control"] == (0.0, 0.0, 0.0)
    assert "control" not in summary["arms"]["random_order"] and "control" not in summary["arms"]["baseline"]
    # An interval does not depend on what else is compared or on which other arms have run.
    without = summarise(dataclasses.replace(config, controls={}), base, records)
    assert without["arms"]["curriculum_sqrt"]["id_vs_baseline"] == curriculum["id_vs_baseline"]
    fewer = summarise(config, base, [r for r in records if r["arm"] != "retry_p0.1"])  # an arm listed before it
    assert fewer["arms"]["curriculum_sqrt"]["id_vs_baseline"] == curriculum["id_vs_baseline"]
    text = markdown(summary, "python training/ablate.py")
    assert "| curriculum_sqrt − random_order | +50.0 [" in text
    # Per seed, as read from each run's items.
    assert curriculum["by_seed"] == {
        s: {"cogfm_addition_digits3": 1.0, "cogfm_addition_digits5": 0.0} for s in (0, 1, 2)
    }
    assert "| retry_p0.1, 2 | 50.0 | 0.0 |" in text


def test_ood_with_headroom_is_where_the_baselines_dev_accuracy_leaves_room_and_it_is_compared_there():
    def run(arm, seed, by_digits):
        test = {f"t{d}": {"task": "addition", "difficulty": d, "correct": c} for d, c in by_digits.items()}
        dev = {f"t{d}_dev": {"task": "addition", "difficulty": d, "correct": c} for d, c in by_digits.items()}
        return {"seed": seed, "test": test, "dev": dev}

    baseline = [
        run("baseline", 0, {8: [1] * 96 + [0] * 4, 12: [1] * 70 + [0] * 30, 16: [1] * 3 + [0] * 97}),
        run("baseline", 1, {8: [1] * 98 + [0] * 2, 12: [1] * 60 + [0] * 40, 16: [1] * 8 + [0] * 92}),
    ]
    # 8 digits: 97% on dev, no room; 12: 65%; 16: 5.5%, just inside (HEADROOM is 5-95%)
    assert headroom_tasks(baseline, ["t8", "t12", "t16"]) == ["t12", "t16"]
    assert headroom_tasks(baseline[:1], ["t8", "t12", "t16"]) == ["t12"]  # 16 digits: 3% on seed 0 alone
    assert headroom_tasks([], ["t8"]) == []

    config, base = load_ablation(ABLATION_RECIPE)
    lr = base["training"]["learning_rate"]
    records = [_run_record(arm, seed, lr, [1, 0] * 50) for arm in ("baseline", "retry_p0.1") for seed in (0, 1)]
    for record in records:  # the OOD bucket: the baseline 50% on dev, the retry arm right on every test item
        record["dev"] = {"cogfm_addition_digits5_dev": {"difficulty": 5, "correct": [1, 0] * 50}}
        if record["arm"] == "retry_p0.1":
            record["test"]["cogfm_addition_digits5"]["correct"] = [1] * 100
    summary = summarise(config, base, records)
    assert summary["headroom_tasks"] == ["cogfm_addition_digits5"]
    assert summary["arms"]["retry_p0.1"]["headroom_vs_baseline"][0] == pytest.approx(1.0)
    assert "OOD with headroom (the baseline's dev accuracy within 5-95%" in markdown(summary, "x")


def test_the_marker_table_splits_exact_match_by_whether_a_solution_wrote_the_marker():
    runs = [
        {"test": {"t": {"marker": [1, 1, 0, 0], "correct": [1, 0, 1, 1]}}},
        {"test": {"t": {"marker": [0, 0, 0, 0], "correct": [0, 1, 1, 1]}}},
    ]
    assert markers_on(runs, "t") == {"marker_rate": 0.25, "correct_with_marker": 0.5, "correct_without_marker": 5 / 6}
    assert markers_on(runs[1:], "t")["correct_with_marker"] is None
    config, base = load_ablation(ABLATION_RECIPE)
    records = [
        _run_record(arm, 0, base["training"]["learning_rate"], [1, 0] * 50) for arm in ("baseline", "retry_p0.1")
    ]
    records[1]["test"]["cogfm_addition_digits3"]["marker"] = [1, 0] * 50  # marks exactly its right answers
    text = markdown(summarise(config, base, records), "x")
    assert "| retry_p0.1 | 50% / 100% / 0% | 0% / – / 0% |" in text
    assert "| baseline | 0% /" not in text  # arms that never write the marker are left out


def test_a_control_named_by_a_selection_is_the_arm_the_selection_chose():
    config, base = load_ablation(ABLATION_RECIPE)
    assert config.controls["combined"] == "best_retry"
    lr = base["training"]["learning_rate"]
    id_correct = {
        "baseline": [1, 0],
        "retry_p0.1": [0, 0],
        "retry_p0.3": [1, 0],
        "retry_p0.5": [0, 0],
        "combined": [1, 1],
    }
    dev_correct = {
        "baseline": [1, 0],
        "retry_p0.1": [0, 0],
        "retry_p0.3": [1, 1],
        "retry_p0.5": [1, 0],
        "combined": [1, 0],
    }
    records = []
    for arm in id_correct:
        for seed in (0, 1, 2):
            record = _run_record(arm, seed, lr, id_correct[arm] * 50)
            record["dev"] = {"cogfm_addition_digits3_dev": {"difficulty": 3, "correct": dev_correct[arm] * 50}}
            records.append(record)
    combined = summarise(config, base, records)["arms"]["combined"]
    assert combined["control"] == "retry_p0.3" and combined["id_vs_control"][0] == pytest.approx(0.5)
    # While a candidate lacks a seed the selection is undecided, and there is no comparison rather than a guess.
    undecided = [r for r in records if (r["arm"], r["seed"]) != ("retry_p0.5", 2)]
    assert "control" not in summarise(config, base, undecided)["arms"]["combined"]


def test_the_report_of_a_given_learning_rate_holds_only_its_runs():
    config, base = load_ablation(ABLATION_RECIPE)
    lr = base["training"]["learning_rate"]  # the sweep has not run, so the base recipe's is its choice
    records = [_run_record(arm, seed, lr, [1, 0] * 50) for arm in ("baseline", "retry_p0.1") for seed in (0, 1, 2)]
    records += [_run_record("baseline", seed, 2 * lr, [1, 1] * 50) for seed in (0, 1, 2)]
    chosen, given = summarise(config, base, records), summarise(config, base, records, learning_rate=2 * lr)
    assert chosen["learning_rate"] == chosen["sweep_choice"] == lr and list(chosen["arms"]) == [
        "baseline",
        "retry_p0.1",
    ]
    assert chosen["arms"]["baseline"]["id"] == (0.5, 0.0)
    assert given["learning_rate"] == 2 * lr and given["sweep_choice"] == lr and list(given["arms"]) == ["baseline"]
    assert given["arms"]["baseline"]["id"] == (1.0, 0.0)
    # Runs and time count what each report shows: its rate's runs and the sweep's (2 * lr is in the sweep).
    assert (chosen["runs"], given["runs"]) == (7, 4) and given["total_seconds"] == 8.0
    assert f"for every arm (given with --learning_rate; the sweep chooses {lr:g})" in markdown(given, "x")
    assert "given with" not in markdown(chosen, "x")


def test_quick_ablation_runs_end_to_end_with_equal_token_budgets(tmp_path):
    base = tiny_recipe(tmp_path / "unused", tmp_path / "unused-out", max_steps=6)
    base["data"]["sources"][0]["mixture"] = [{"task": "addition", "difficulty": [1, 4]}]
    base["data"]["sources"][0]["num_examples"] = 400
    base["curriculum"] = {"pacing": "uniform"}
    base["loss"] = {}
    base["eval"] = {
        "tasks": ["cogfm_addition_digits3"],
        "every_steps": 3,
        "limit": 2,
        "final_limit": 2,
        "batch_size": 8,
    }
    write_recipe(tmp_path / "base.yaml", base)
    ablation = yaml.safe_load(ABLATION_RECIPE.read_text())
    ablation.update(
        base="base.yaml",
        output_dir=str(tmp_path / "full"),
        test_limit=3,
        eval_batch_size=8,
        test_tasks=["cogfm_addition_digits3", "cogfm_addition_digits5"],
        dev_tasks=["cogfm_addition_digits3_dev", "cogfm_addition_digits5_dev"],
        quick={"arms": ["baseline", "retry_p0.3"], "seeds": [0], "output_dir": str(tmp_path / "quick")},
    )
    write_recipe(tmp_path / "ablation.yaml", ablation)

    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "training" / "ablate.py"), str(tmp_path / "ablation.yaml"), "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    quick = tmp_path / "quick"
    runs = {p.parent.name.split("-lr")[0]: p.parent for p in quick.glob("runs/*/ablation_eval.json")}
    assert sorted(runs) == ["baseline", "retry_p0.3"]

    # The arms' resolved recipes differ only in what each studies (and where its outputs go).
    recipes = {arm: yaml.safe_load((run / "ablation_recipe.yaml").read_text()) for arm, run in runs.items()}
    assert differing(recipes["retry_p0.3"], recipes["baseline"]) - ALWAYS == {"data.sources.0.mixture.0.retry_p"}
    assert len({r["data"]["tokenizer"]["path"] for r in recipes.values()}) == 1  # one tokenizer for every arm

    # The same token budget, read from each run's training log: steps x sequences per step x sequence length.
    budgets = {}
    for arm, run in runs.items():
        state = json.loads((run / "trainer_state.json").read_text())
        logged = [e for e in state["log_history"] if "loss" in e]
        assert logged[-1]["step"] == state["global_step"] == 6
        slots = state["global_step"] * state["train_batch_size"] * recipes[arm]["data"]["pack"]["seq_len"]
        tokens = state["log_history"][-1].get("num_input_tokens_seen") or logged[-1]["num_input_tokens_seen"]
        budgets[arm] = (slots, tokens)
    assert len({slots for slots, _ in budgets.values()}) == 1
    assert all(0.5 * slots < tokens <= slots for slots, tokens in budgets.values())

    for run in runs.values():  # lm-eval's self-correction metrics, read from its results
        record = json.loads((run / "ablation_eval.json").read_text())
        metrics = record["self_correction"]["cogfm_addition_self_correction"]
        assert {"marker_rate", "false_marker_rate", "self_corrected", "exact_match"} <= set(metrics)
        assert all(0.0 <= value <= 1.0 for value in metrics.values())

    # The report: a row per arm, numbers where they belong, plots.
    summary = json.loads((quick / "results.json").read_text())
    assert list(summary["arms"]) == ["baseline", "retry_p0.3"]
    assert summary["id_tasks"] == ["cogfm_addition_digits3"] and summary["ood_tasks"] == ["cogfm_addition_digits5"]
    for arm, row in summary["arms"].items():
        assert 0.0 <= row["id"][0] <= 1.0 and 0.0 <= row["ood"][0] <= 1.0 and row["tokens"] == [budgets[arm][1]]
        assert (arm == "baseline") == ("id_vs_baseline" not in row)
        assert len(row["curve"][0]) == 3  # in-loop evaluations at steps 0, 3, 6
        assert [point["step"] for point in row["loss_curve"][0]] == [1, 2, 3, 4, 5, 6]  # logged every step
    text = (quick / "results.md").read_text()
    tables = [block.splitlines() for block in text.split("\n\n") if block.startswith("| arm |")]
    main = tables[0]
    assert len(main) == 2 + len(summary["arms"]) and main[1].startswith("|---|")
    assert all(
        len(table) == len(main) and {line.count("|") for line in table} == {table[0].count("|")} for table in tables
    )
    assert [line.split(" | ")[0] for line in main[2:]] == [f"| {arm}" for arm in summary["arms"]]
    plots = ("accuracy-by-difficulty", "learning-curves", "curves-by-task", "loss-curves")
    for name in (f"ablation-{plot}.png" for plot in plots):
        assert (quick / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Learnability gate" in text
    # Every report names the precision and the machine its runs trained with (`bf16: auto` differs by machine).
    from cogfm_hf.hardware import describe_device, resolve_bf16

    precision = "bf16" if resolve_bf16(recipes["baseline"]["training"].get("bf16", "auto")) else "fp32"
    assert summary["machines"] == [f"{precision} on {describe_device()}"]
    assert f"Precision and machine of the runs: {summary['machines'][0]}." in text

    # The report of a given learning rate (here the one the quick runs used) goes beside it; an unknown one is refused.
    lr = base["training"]["learning_rate"]
    report_only = [str(tmp_path / "ablation.yaml"), "--quick", "--report-only", "--learning_rate"]
    ablate_main(report_only + [str(lr)])
    assert json.loads((quick / f"lr{lr:g}" / "results.json").read_text())["arms"].keys() == summary["arms"].keys()
    with pytest.raises(SystemExit, match=f"--learning_rate {3 * lr:g}: no completed run"):
        ablate_main(report_only + [str(3 * lr)])

    # Resumable: a second call finds every run complete and only rewrites the report.
    again = subprocess.run(
        [sys.executable, str(REPOSITORY / "training" / "ablate.py"), str(tmp_path / "ablation.yaml"), "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert again.returncode == 0 and '"event": "start"' not in again.stdout, again.stdout[-2000:]
