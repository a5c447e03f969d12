"""The lm-evaluation-harness tasks in eval_tasks/: every YAML builds; a reference model that writes the gold
solutions scores 100% and one that writes wrong answers 0%; the `lm_eval` CLI runs them on a checkpoint
in a process without cogfm_hf; and the in-loop callback's numbers equal the CLI's."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from cogfm_hf import CogFMForCausalLM
from cogfm_hf.paths import EVAL_TASKS_DIR
from cogfm_hf.tasks import TASKS, get_task
from cogfm_hf.tasks.answers import ANSWER_PREFIX, BACK
from cogfm_hf.tasks.base import is_held_out
from cogfm_hf.tasks.export import GENERATED
from cogfm_hf.training.evaluation import scores

from .conftest import PRETRAINED_EVAL, run_isolated_python

# Every task file (group files list tasks; task files name one): the test tasks, and the dev sets beside them.
ALL_TASK_NAMES = sorted(
    config["task"]
    for config in map(lambda p: yaml.safe_load(p.read_text()), (EVAL_TASKS_DIR / GENERATED).glob("cogfm_*.yaml"))
    if isinstance(config.get("task"), str)
)
TASK_NAMES = [name for name in ALL_TASK_NAMES if not name.endswith("_dev")]
DEV_TASK_NAMES = [name for name in ALL_TASK_NAMES if name.endswith("_dev")]
MANIFEST = json.loads((EVAL_TASKS_DIR / "data" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager(include_path=str(EVAL_TASKS_DIR))


def test_eval_tasks_top_holds_the_hand_written_files_and_every_generated_yaml_is_in_generated():
    top = {p.name for p in EVAL_TASKS_DIR.iterdir() if p.name != "__pycache__"}
    assert top == {
        "_generation_template_yaml",
        "_reasoning_gym_template_yaml",
        "_next_step_template_yaml",
        "_self_correction_template_yaml",
        "utils.py",
        "answers.py",
        "metrics",
        "data",
        GENERATED,
    }
    generated = {p.relative_to(EVAL_TASKS_DIR).as_posix() for p in EVAL_TASKS_DIR.rglob("*cogfm_*.yaml")}
    assert generated == {f"{GENERATED}/{p.name}" for p in (EVAL_TASKS_DIR / GENERATED).iterdir()}
    assert len(generated) == len(ALL_TASK_NAMES) + len(TASKS) * 3 + 4  # task files; groups: per task, id, ood; 4 more
    # lm-eval resolves an include against the including file's folder: the templates are one level up.
    includes = {yaml.safe_load((EVAL_TASKS_DIR / p).read_text()).get("include") for p in generated}
    assert includes == {None} | {
        f"../_{kind}_template_yaml" for kind in ("generation", "reasoning_gym", "next_step", "self_correction")
    }


def test_lm_eval_validates_and_builds_every_task(task_manager, tmp_path):
    # Generation buckets, self-correction per task that writes steps (not reasoning-gym's), next-step tasks.
    generation_buckets = sum(len(task.buckets) for task in TASKS.values())
    steps_written = [name for name, task in TASKS.items() if task.writes_steps and not name.startswith("rg_")]
    next_step = [name for name in TASK_NAMES if name.endswith("_next_step")]
    assert (generation_buckets, len(steps_written), len(next_step)) == (75, 10, 6)
    assert len(TASK_NAMES) == generation_buckets + len(steps_written) + len(next_step)
    assert DEV_TASK_NAMES == sorted(
        f"{name}_dev" for name in TASK_NAMES if not name.endswith(("_next_step", "_self_correction"))
    )
    lm_eval = Path(sys.executable).parent / "lm_eval"
    result = subprocess.run(
        [
            str(lm_eval),
            "validate",
            "--tasks",
            ",".join(["cogfm_all", "cogfm_dev", *ALL_TASK_NAMES]),
            "--include_path",
            str(EVAL_TASKS_DIR),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "All tasks found and valid" in result.stdout, result.stdout + result.stderr

    tasks = task_manager.load(["cogfm_all"])["tasks"]
    assert sorted(tasks) == TASK_NAMES  # the group reaches every task file, and nothing else
    # The headline group holds exactly the tasks its metric (exact match of the extracted answer) exists in.
    generation = [name for name in TASK_NAMES if not name.endswith(("_next_step", "_self_correction"))]
    assert (
        sorted(task_manager.load(["cogfm_reasoning"])["tasks"]) == generation and len(generation) == generation_buckets
    )
    for name, task in tasks.items():
        docs = list(task.test_docs())
        test_set = task.config.dataset_kwargs["test_set"]
        assert len(docs) == MANIFEST["files"][f"{test_set}.jsonl"]["examples"] == 200, name
        assert task.doc_to_text(docs[0]) == docs[0]["prompt"], name  # the prompt exactly, no stripping
        if task.OUTPUT_TYPE == "generate_until":
            kwargs = task.config.generation_kwargs
            assert "\n\n" in kwargs["until"] and not kwargs["do_sample"], name
            assert kwargs["max_gen_toks"] >= max(len(d["solution"].encode()) for d in docs), name


def test_dev_sets_come_from_training_templates_and_share_no_problem_with_test(task_manager):
    """Choices (a learning rate, the best arm of an ablation) are made on the dev sets, never on test."""
    dev_tasks = task_manager.load(["cogfm_dev"])["tasks"]
    assert sorted(dev_tasks) == DEV_TASK_NAMES
    test_prompts = {
        json.loads(line)["prompt"]
        for path in (EVAL_TASKS_DIR / "data").glob("*.jsonl")
        if not path.stem.endswith("_dev")
        for line in path.read_text().splitlines()
    }
    for name, task in dev_tasks.items():
        docs = list(task.test_docs())
        test = task_manager.load([name.removesuffix("_dev")])["tasks"][name.removesuffix("_dev")]
        assert (
            len(docs) == 100 and MANIFEST["files"][f"{task.config.dataset_kwargs['test_set']}.jsonl"]["split"] == "dev"
        )
        assert {d["difficulty"] for d in docs} == {d["difficulty"] for d in test.test_docs()}, name  # the same bucket
        assert not any(is_held_out(d["template_id"]) for d in docs), name
        if get_task(docs[0]["task"]).question_determines_template:  # a rule's k = 0 question is every rule's
            assert not {d["prompt"] for d in docs} & test_prompts, name


def _wrong_answer(doc) -> str:
    if doc["answer_candidates"]:
        return next(c for c in doc["answer_candidates"] if c != doc["answer"])
    return str(int(doc["answer"]) + 1)


def _with_answer(solution: str, answer: str) -> str:
    body, _, _ = solution.rpartition(ANSWER_PREFIX)
    return f"{body}{ANSWER_PREFIX}{answer}\n"


class ReferenceLM(LM):
    """A "model" that answers from each document: `right=True` writes the gold solution (then, as a model
    may, starts another problem with a different answer, which must be ignored); `right=False` writes the
    gold working with a wrong final answer. For next-step items it prefers the gold choice, or any other."""

    def __init__(self, right: bool):
        super().__init__()
        self.right = right
        self.contexts_ok = True

    def generate_until(self, requests):
        outputs = []
        for request in requests:
            context, kwargs = request.args
            doc = request.doc
            self.contexts_ok &= context == doc["prompt"]
            if self.right:
                outputs.append(doc["solution"] + "Mod 10. ka=3. Find ka.\nAnswer: " + _wrong_answer(doc) + "\n")
            else:
                outputs.append(_with_answer(doc["solution"], _wrong_answer(doc)))
        return outputs

    def loglikelihood(self, requests):
        outputs = []
        for request in requests:
            context, continuation = request.args
            doc = request.doc
            self.contexts_ok &= context == doc["prompt"]
            is_gold = continuation == doc["choices"][doc["gold"]]
            outputs.append((0.0 if is_gold == self.right else -5.0, False))
        return outputs

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


def _evaluate(model, task_manager) -> dict:
    return simple_evaluate(
        model=model, tasks=["cogfm_all", "cogfm_dev"], task_manager=task_manager, limit=None, bootstrap_iters=0
    )


def test_gold_solutions_score_100_percent_on_every_item(task_manager):
    model = ReferenceLM(right=True)
    flat = scores(_evaluate(model, task_manager))
    assert model.contexts_ok
    for name in ALL_TASK_NAMES:
        if name.endswith("_next_step"):
            assert flat[f"{name}/acc"] == 1.0, name
        elif name.endswith("_self_correction"):
            assert flat[f"{name}/self_corrected"] == flat[f"{name}/marker_rate"] == flat[f"{name}/exact_match"] == 1.0
            assert flat[f"{name}/false_marker_rate"] == 0.0
        else:
            assert flat[f"{name}/exact_match"] == 1.0, name
            if name.startswith("cogfm_rg_"):  # reasoning-gym's own verifier agrees
                assert flat[f"{name}/rg_score"] == 1.0, name
    assert flat["cogfm_reasoning/exact_match"] == flat["cogfm_chains_ood/exact_match"] == 1.0
    assert (
        flat["cogfm_self_correction/self_corrected"] == 1.0 and flat["cogfm_self_correction/false_marker_rate"] == 0.0
    )


def test_wrong_answers_score_0_percent_on_every_item(task_manager):
    flat = scores(_evaluate(ReferenceLM(right=False), task_manager))
    for name in ALL_TASK_NAMES:
        if name.endswith("_next_step"):
            assert flat[f"{name}/acc"] == 0.0, name
        elif name.endswith("_self_correction"):  # the marker is written where it belongs, but the answer is wrong
            assert flat[f"{name}/marker_rate"] == 1.0 and flat[f"{name}/self_corrected"] == 0.0, name
            assert flat[f"{name}/exact_match"] == flat[f"{name}/false_marker_rate"] == 0.0, name
        else:
            assert flat[f"{name}/exact_match"] == 0.0, name
            if name.startswith("cogfm_rg_"):
                assert flat[f"{name}/rg_score"] == 0.0, name
    assert flat["cogfm_reasoning/exact_match"] == flat["cogfm_self_correction/self_corrected"] == 0.0
    assert flat["cogfm_self_correction/marker_rate"] == 1.0 and flat["cogfm_next_step/acc"] == 0.0


def _utils():
    spec = importlib.util.spec_from_file_location("eval_tasks_utils", EVAL_TASKS_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_self_correction_needs_the_marker_first_then_the_right_answer_and_no_false_alarms():
    utils = _utils()
    planted, control = map(
        json.loads, (EVAL_TASKS_DIR / "data" / "logic_self_correction.jsonl").read_text().splitlines()[:2]
    )
    right, wrong = f"{ANSWER_PREFIX}{planted['answer']}\n", f"{ANSWER_PREFIX}{_wrong_answer(planted)}\n"
    scored = utils.score_self_correction(planted, [BACK + right])
    assert math.isnan(scored.pop("false_marker_rate"))  # a rate of the other kind of item: not applicable
    assert scored == {"self_corrected": 1.0, "marker_rate": 1.0, "exact_match": 1.0}
    assert utils.score_self_correction(planted, [right])["self_corrected"] == 0.0  # the mistake stayed
    assert utils.score_self_correction(planted, [f"x{BACK}{right}"])["marker_rate"] == 0.0  # the marker comes first
    assert utils.score_self_correction(planted, [BACK + wrong])["self_corrected"] == 0.0
    scored = utils.score_self_correction(control, [right])
    assert math.isnan(scored.pop("self_corrected")) and math.isnan(scored.pop("marker_rate"))
    assert scored == {"false_marker_rate": 0.0, "exact_match": 1.0}
    # A rate is the mean over the items it applies to; with none (a --limit of one kind only) it is NaN.
    assert utils.mean_where_defined([1.0, math.nan, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert math.isnan(utils.mean_where_defined([math.nan]))
    assert utils.score_self_correction(control, [BACK + right])["false_marker_rate"] == 1.0
    # Logic answers must be one of the two names the question offers.
    assert utils.answer_of(planted, f"{ANSWER_PREFIX}zzz\n") == ""


def test_a_test_set_is_read_once_per_process_until_its_file_changes(tmp_path, monkeypatch):
    utils = _utils()
    monkeypatch.setattr(utils, "DATA_DIR", tmp_path)
    path = tmp_path / "toy.jsonl"
    path.write_text('{"question": "1+1=?", "answer": "2"}\n')
    first = utils.load_test_set("toy")
    assert utils.load_test_set("toy") is first and first["test"]["answer"] == ["2"]
    path.write_text('{"question": "1+1=?", "answer": "2"}\n{"question": "2+2=?", "answer": "4"}\n')
    assert utils.load_test_set("toy")["test"]["answer"] == ["2", "4"]


def test_missing_test_set_names_the_file_and_the_fix():
    with pytest.raises(FileNotFoundError, match=r"chains_op99\.jsonl.*python -m cogfm_hf.tasks export"):
        _utils().load_test_set("chains_op99")


def test_cli_on_a_checkpoint_without_the_package_equals_the_in_loop_scores(pretrained, tmp_path):
    """The CLI exactly as the README gives it, from another directory, on the final checkpoint of a run whose
    callback evaluated the same tasks with the same item limit after its last step."""
    limit, batch = PRETRAINED_EVAL["final_limit"], PRETRAINED_EVAL["batch_size"]
    code = (
        "import sys\nfrom lm_eval.__main__ import cli_evaluate\n"
        f"sys.argv = ['lm_eval', '--model', 'hf', '--model_args', 'pretrained={pretrained},trust_remote_code=True', "
        f"'--include_path', {str(EVAL_TASKS_DIR)!r}, '--tasks', 'cogfm_all', '--device', 'cpu', "
        f"'--limit', '{limit}', '--batch_size', '{batch}', '--output_path', 'results']\ncli_evaluate()\n"
    )
    result = run_isolated_python(code, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # Our task files make lm-eval warn about nothing; the one warning left is lm-eval's own about --limit.
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "--limit SHOULD ONLY BE USED FOR TESTING" in warnings[0], warnings
    [results_file] = (tmp_path / "results").rglob("results_*.json")
    cli = json.loads(results_file.read_text())
    assert "cogfm_reasoning" in cli["groups"] and "cogfm_chains_op14" in cli["results"]

    in_loop = scores(json.loads((pretrained / "eval_results.json").read_text()))
    assert scores(cli) == in_loop and len(in_loop) > 50
    # The same numbers were logged next to the loss at the last step, and went into the model card.
    state = json.loads((pretrained / "checkpoint-6" / "trainer_state.json").read_text())
    [logged] = [e for e in state["log_history"] if e["step"] == 6 and "eval/cogfm_reasoning/exact_match" in e]
    assert {k: logged[f"eval/{k}"] for k in in_loop} == {k: round(v, 4) for k, v in in_loop.items()}
    assert sorted(e["step"] for e in state["log_history"] if "eval/cogfm_reasoning/exact_match" in e) == [0, 3, 6]
    assert any(k.startswith("eval_difficulty/chains/") for k in logged)


def test_model_card_and_plots(pretrained):
    card = ModelCard.load(pretrained / "README.md")
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "transformers" and "custom_code" in metadata["tags"]
    results = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in metadata["model-index"][0]["results"]}
    in_loop = scores(json.loads((pretrained / "eval_results.json").read_text()))
    assert results["cogfm_reasoning"] == round(in_loop["cogfm_reasoning/exact_match"], 4)
    state = json.loads((pretrained / "checkpoint-6" / "trainer_state.json").read_text())
    assert f"**{state['num_input_tokens_seen']:,} non-padding tokens**" in card.text
    params = sum(p.numel() for p in CogFMForCausalLM.from_pretrained(pretrained).parameters())
    assert f"{params:,} parameters" in card.text and "| **cogfm_chains_ood** | exact_match |" in card.text
    assert "pacing: sqrt" in card.text and "| reasoning | tasks | 600 |" in card.text
    # Items: per task the limit, per group the sum over its tasks; a group's most-common-answer baseline is
    # the item-weighted mean of its tasks'.
    limit = PRETRAINED_EVAL["final_limit"]
    assert f"the first {limit} items of each task; a group (bold) counts the items of all its tasks" in card.text
    rows = {
        (cells[1].strip("* "), cells[2].strip()): cells
        for line in card.text.splitlines()
        if line.startswith("| ") and len(cells := line.split("|")) == 8
    }
    ood_tasks = yaml.safe_load((EVAL_TASKS_DIR / GENERATED / "_cogfm_chains_ood.yaml").read_text())["task"]
    assert rows[("cogfm_chains_ood", "exact_match")][5].strip() == str(limit * len(ood_tasks))
    task_baselines = [float(rows[(name, "exact_match")][6]) for name in ood_tasks]
    group_baseline = float(rows[("cogfm_chains_ood", "exact_match")][6])
    assert group_baseline == pytest.approx(sum(task_baselines) / len(ood_tasks), abs=1e-3)
    for plot in ("loss.png", "accuracy_by_difficulty.png"):
        assert (pretrained / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot})" in card.text


def test_model_card_leads_with_what_the_model_learned_before_and_after(pretrained):
    """Per family and split: the step-0 score → the final one (± a 95% interval), the items, the most-common-answer
    level of the same items, and chance where every prompt names its candidates; the self-correction rates."""
    card = (pretrained / "README.md").read_text()
    learned = card[card.index("## What it learned") : card.index("## Use")]
    assert learned.index("| family | split |") < learned.index("![accuracy by difficulty](accuracy_by_difficulty.png)")
    final = json.loads((pretrained / "eval_results.json").read_text())
    state = json.loads((pretrained / "trainer_state.json").read_text())
    [before] = [e for e in state["log_history"] if e["step"] == 0 and "eval/items" in e]
    detail = {  # the card's full table: group -> its cells (value, stderr, items, most common answer)
        cells[1].strip("* "): [cell.strip() for cell in cells[3:7]]
        for line in card.splitlines()
        if line.startswith("| ") and len(cells := line.split("|")) == 8 and cells[2].strip() == "exact_match"
    }
    rows = {
        (cells[1].strip(), cells[2].strip()): [cell.strip() for cell in cells[3:7]]
        for line in learned.splitlines()
        if line.startswith("| ") and len(cells := line.split("|")) == 8 and cells[2].strip() in ("ID", "OOD")
    }
    families = {name.removeprefix("cogfm_").removesuffix("_id") for name in final["groups"] if name.endswith("_id")}
    assert {"chains", "logic", "addition_lsd"} <= families and set(rows) == {
        (family, split) for family in families for split in ("ID", "OOD")
    }
    for (family, split), (before_after, items, most_common, chance) in rows.items():
        group = f"cogfm_{family}_{split.lower()}"
        after = final["groups"][group]["exact_match,extract_answer"]
        stderr = final["groups"][group]["exact_match_stderr,extract_answer"]
        expected = f"{100 * before[f'eval/{group}/exact_match']:.1f} → {100 * after:.1f} ± {196 * stderr:.1f}"
        assert before_after == expected
        value, _, group_items, group_most_common = detail[group]
        assert items == group_items and most_common == f"{100 * float(group_most_common):.1f}"
        assert chance == ("50.0" if family == "logic" else "")  # "Which holds, kap or bib?"
    corrections = [line for line in learned.splitlines() if line.startswith("| chains |") and line.count("→") == 2]
    marker = final["results"]["cogfm_chains_self_correction"]["marker_rate,none"]
    assert len(corrections) == 1 and f"→ {100 * marker:.1f} |" in corrections[0]
