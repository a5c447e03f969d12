"""reasoning-gym as a task source and the in-context rule-induction tasks: difficulty mapping, held-out splits by
question and by rule, refusals, a real data build through dedup and decontamination into packed shards, the build's
leak check, and an exported reasoning-gym task scored through the lm_eval CLI without cogfm_hf."""

import gzip
import json
import random
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from cogfm_hf.data import build, load_packed, unpack_documents
from cogfm_hf.data.pack import TASK_VOCAB
from cogfm_hf.data.pipeline import HeldOutQuestionError
from cogfm_hf.paths import EVAL_DATA_DIR, EVAL_TASKS_DIR
from cogfm_hf.tasks import Mixture, get_task
from cogfm_hf.tasks.base import is_held_out, question_key, template_id
from cogfm_hf.tasks.rules import MAP_INPUTS

from .conftest import run_isolated_python
from .corpus_factory import prose


def test_difficulty_sets_every_curriculum_attribute_to_its_level():
    count_bits = get_task("rg:count_bits")
    assert count_bits.levels == {"n": [10, 1000, 1000000, 100000000, 2147483647]}
    # An attribute reasoning-gym keeps an interval spans from its level's value to the next one's.
    assert (count_bits.dataset_at(2).config.min_n, count_bits.dataset_at(2).config.max_n) == (1000, 1000000)
    assert (count_bits.dataset_at(5).config.min_n, count_bits.dataset_at(5).config.max_n) == (10**8, 2**31 - 1)
    arithmetic = get_task("rg:basic_arithmetic").dataset_at(3).config  # num_terms [2..6], num_digits [1..4]
    assert (arithmetic.min_terms, arithmetic.max_terms, arithmetic.min_digits, arithmetic.max_digits) == (4, 4, 3, 3)
    # Beyond an attribute's last level it stays there: level 5 of basic_arithmetic has 6 terms of 4 digits.
    arithmetic = get_task("rg:basic_arithmetic").dataset_at(5).config
    assert (arithmetic.min_terms, arithmetic.max_digits) == (6, 4)


def test_reasoning_gym_items_are_held_out_by_their_question_and_reproducible():
    task = get_task("rg:letter_counting")
    train = [example for example, _ in zip(task.generate(seed=3, level=(1, 3)), range(300))]
    held_out = [example for example, _ in zip(task.generate(seed=3, split="heldout", level=(1, 3)), range(60))]
    assert all(e.template_id == question_key(e.prompt) and not e.held_out for e in train)
    assert all(e.held_out for e in held_out)
    assert not {question_key(e.prompt) for e in train} & {question_key(e.prompt) for e in held_out}
    assert {e.difficulty for e in train} == {1, 2, 3}
    again = [example for example, _ in zip(task.generate(seed=3, level=(1, 3)), range(300))]
    assert [e.text for e in again] == [e.text for e in train]
    # The question is what reasoning-gym asked, its answer what reasoning-gym's verifier scores 1.
    entry = train[0].meta["reasoning_gym"]
    assert train[0].prompt == entry["question"] + "\n" and train[0].solution == f"Answer: {entry['answer']}\n"
    from reasoning_gym import get_score_answer_fn

    assert get_score_answer_fn("letter_counting")(train[0].answer, entry) == 1.0
    # Normalisation: case and whitespace do not make a question new.
    assert question_key("How many  1 bits in 7?\n") == question_key("how many 1 bits in 7?")


@pytest.mark.parametrize(
    "component, message",
    [
        ({"task": "rg:count_bits", "retry_p": 0.2}, "retry_p 0.2 asks for retry data"),
        ({"task": "rg:sudoku"}, "reasoning-gym task 'sudoku' is not offered"),
        ({"task": "rg:count_bits", "difficulty": [1, 9]}, "knob 'level' must be <= 5"),
        ({"task": "rules_mod", "knobs": {"rules": 500}}, "asks for 500 training rules; only 81 exist"),
        ({"task": "rules_mod", "knobs": {"modulus": 12}}, "must be prime"),
        ({"task": "rules_map", "difficulty": [1, 9]}, "knob 'k' must be <= 8"),
        ({"task": "rules_map", "knobs": {"burstiness": 1.5}}, "knob 'burstiness' must be a number in [0, 1]"),
    ],
)
def test_bad_components_are_refused_naming_the_component(component, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        Mixture([{"task": "chains"}, component])
    assert str(error.value).startswith(f"mixture component 1 ({component['task']})")


def test_a_rules_knob_trains_on_that_many_fixed_training_rules():
    for name, count in (("rules_map", 16), ("rules_mod", 64)):
        task = get_task(name)
        mixture = Mixture([{"task": name, "knobs": {"rules": count}}], seed=5)
        templates = {mixture.example(i).template_id for i in range(3000)}
        assert len(templates) == count and not any(is_held_out(t) for t in templates)
        # The same rules under another seed: an arm's rule set does not depend on the run.
        assert templates == {
            Mixture([{"task": name, "knobs": {"rules": count}}], seed=9).example(i).template_id for i in range(3000)
        }
        # A smaller set is the start of a larger one: 16 rules are among the 64.
        rule_knobs = {knob: task.default_knobs[knob] for knob in task.rule_knobs}
        assert task.training_rules(8, **rule_knobs) == task.training_rules(count, **rule_knobs)[:8]


def test_rule_test_sets_ask_held_out_rules_with_k_pairs_in_the_prompt():
    for name, shown in (("rules_map", True), ("rules_mod", False)):
        for k in (0, 1, 2, 4, 8):
            items = [json.loads(line) for line in (EVAL_DATA_DIR / f"{name}_k{k}.jsonl").read_text().splitlines()]
            assert len(items) == 200 and all(is_held_out(item["template_id"]) for item in items)
            for item in items:
                pairs = re.findall(r"(\w+) -> (\d+)", item["prompt"].split("\n")[0])
                query = re.search(r"Query: (\w+) -> \?", item["prompt"]).group(1)
                assert len(pairs) == k and item["difficulty"] == k
                # rules_map: a held-out rule is answerable only from the shown pair; rules_mod asks a new x.
                assert (query in dict(pairs)) == (shown and k > 0), item["id"]
                if shown and k > 0:
                    assert dict(pairs)[query] == item["answer"]
                # The level a model reaches without the lookup: one shown output, uniformly (rules_map); a residue.
                outputs = [y for _, y in pairs]
                guess = outputs.count(item["answer"]) / k if shown and k > 0 else (1 / 10 if shown else 1 / 11)
                assert get_task(name).guess_accuracy(item["prompt"], item["answer"]) == pytest.approx(guess)
    # Every k = 8 prompt of rules_map shows the whole mapping; the pairs agree with one rule.
    item = json.loads((EVAL_DATA_DIR / "rules_map_k8.jsonl").read_text().splitlines()[0])
    assert len(set(re.findall(r"(\w+) -> ", item["prompt"].split("\n")[0]))) == MAP_INPUTS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    (root / "prose").mkdir()
    rng = random.Random(0)
    documents = [prose(rng), prose(rng)]
    for index, text in enumerate(documents + documents[:1]):  # a duplicate: deduplication runs beside the tasks
        (root / "prose" / f"doc{index}.txt").write_text(text)
    recipe = {
        "output_dir": str(root / "out"),
        "workers": 1,
        "sources": [
            {"name": "prose", "type": "files", "path": str(root / "prose")},
            {
                "name": "reasoning",
                "type": "tasks",
                "num_examples": 400,
                "seed": 1,
                "mixture": [
                    {"task": "rg:count_bits", "difficulty": [1, 3]},
                    {"task": "rg:basic_arithmetic", "difficulty": [1, 2]},
                    {"task": "rules_map", "knobs": {"rules": 16}},
                    {"task": "rules_mod"},
                ],
            },
        ],
        "clean": {"min_chars": 20},
        "tokenizer": {"vocab_size": 400, "train_chars": 60_000},
        "pack": {"seq_len": 128},
    }
    build(recipe, keep_work=True)
    return {"root": root, "recipe": recipe, "work": next(root.glob(".out.build-*"))}


def _curated_tasks(work: Path) -> list[dict]:
    records = []
    for path in sorted((work / "curated" / "task").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            records += [json.loads(line) for line in handle]
    return records


def test_reasoning_gym_and_rule_tasks_flow_into_packed_shards_with_difficulty_columns(built):
    report = json.loads((built["root"] / "out" / "report.json").read_text())
    assert report["sources"]["prose"]["removed"] == 1  # the duplicate: the corpus went through deduplication
    packed = load_packed(built["root"] / "out" / "packed")
    tokenizer = AutoTokenizer.from_pretrained(built["root"] / "out" / "tokenizer")
    by_task: dict[str, list[tuple[str, set]]] = {}
    for row in packed:
        documents = unpack_documents(row)
        start = 0
        for ids in documents:
            span = slice(start, start + len(ids))
            task = TASK_VOCAB[row["task_ids"][span][0]]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            by_task.setdefault(task, []).append((text, set(row["difficulties"][span])))
            start += len(ids)
    assert {"rg_count_bits", "rg_basic_arithmetic", "rules_map", "rules_mod", "corpus"} <= set(by_task)
    for text, difficulties in by_task["rg_count_bits"]:
        assert "1 bits" in text and len(difficulties) == 1 and difficulties <= {1, 2, 3}
    assert {d for _, ds in by_task["rg_count_bits"] for d in ds} == {1, 2, 3}
    assert {d for _, ds in by_task["rules_mod"] for d in ds} <= set(range(1, 9))


def test_held_out_rules_never_reach_the_built_training_data(built):
    """Every rule in the build is a training rule, and none is a rule the test sets ask about."""
    test_rules = {
        json.loads(line)["template_id"]
        for path in EVAL_DATA_DIR.glob("rules_*.jsonl")
        if not path.stem.endswith("_dev")
        for line in path.read_text().splitlines()
    }
    documents = [d for d in _curated_tasks(built["work"]) if d["metadata"]["task"].startswith("rules_")]
    assert len(documents) > 150
    for document in documents:
        assert document["metadata"]["template_id"] not in test_rules
        assert not is_held_out(document["metadata"]["template_id"])
        if document["metadata"]["task"] == "rules_mod":  # the rule read back from the text itself
            a, b, p = re.search(r"y = (\d+)x\+(\d+) mod (\d+)", document["text"]).groups()
            assert not is_held_out(template_id(f"rules_mod|{p}|{a}|{b}"))
            assert template_id(f"rules_mod|{p}|{a}|{b}") == document["metadata"]["template_id"]
    assert len({d["metadata"]["template_id"] for d in documents if d["metadata"]["task"] == "rules_map"}) == 16


def test_a_training_question_equal_to_a_test_items_refuses_the_build(built, tmp_path):
    """The build's leak check: plant one training question in a test set; nothing is published."""
    leaked = next(d for d in _curated_tasks(built["work"]) if d["metadata"]["task"] == "rg_count_bits")
    question = leaked["text"].split("\n")[0] + "\n"
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    item = {"id": "rg_count_bits/level1/0", "task": "rg_count_bits", "prompt": question.upper(), "answer": "1"}
    (eval_dir / "rg_count_bits_level1.jsonl").write_text(json.dumps(item) + "\n")
    recipe = {**built["recipe"], "output_dir": str(tmp_path / "out"), "decontamination": {"eval_dir": str(eval_dir)}}
    with pytest.raises(HeldOutQuestionError, match=r"1 generated training document\(s\) ask the question") as error:
        build(recipe)
    assert "rg_count_bits_level1.jsonl:rg_count_bits/level1/0" in str(error.value)
    assert not (tmp_path / "out").exists()


CLI_SCRIPT = """
import sys
from lm_eval.__main__ import cli_evaluate
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

@register_model("reference")
class Reference(LM):
    def __init__(self, answer="right", **kwargs):
        super().__init__()
        self.answer = answer
    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return cls(**dict(part.split("=") for part in arg_string.split(",") if part))
    def generate_until(self, requests):
        wrong = lambda doc: str(int(doc["answer"]) + 1)
        return [f"Answer: {r.doc['answer'] if self.answer == 'right' else wrong(r.doc)}\\n" for r in requests]
    def loglikelihood(self, requests):
        raise NotImplementedError
    def loglikelihood_rolling(self, requests):
        raise NotImplementedError

sys.argv = ["lm_eval", "--model", "reference", "--model_args", "answer=ANSWER", "--include_path", INCLUDE,
            "--tasks", "cogfm_rg_count_bits_level1,cogfm_rg_basic_arithmetic_level3", "--limit", "20",
            "--output_path", "results"]
cli_evaluate()
"""


@pytest.mark.parametrize("answer, score", [("right", 1.0), ("wrong", 0.0)])
def test_an_exported_reasoning_gym_task_scores_through_the_cli_without_the_package(tmp_path, answer, score):
    code = CLI_SCRIPT.replace("ANSWER", answer).replace("INCLUDE", repr(str(EVAL_TASKS_DIR)))
    result = run_isolated_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = (tmp_path / "results").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    for task in ("cogfm_rg_count_bits_level1", "cogfm_rg_basic_arithmetic_level3"):
        assert results[task]["exact_match,extract_answer"] == score, results[task]
        assert results[task]["rg_score,extract_answer"] == score, results[task]  # reasoning-gym's own verifier
