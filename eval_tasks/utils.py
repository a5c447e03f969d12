"""What the cogfm lm-eval tasks call: load a shipped test set, read answers, score self-correction.

lm-eval loads this file by path, from wherever `--include_path` points and whatever the current
directory is, in a process that may not have `cogfm_hf` installed: so it imports only lm-eval's own
dependencies, finds the data beside itself, and reads answers with `answers.py` (an exported copy of
`cogfm_hf/tasks/answers.py`).
"""

import importlib.util
import json
import sys
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"


def _load_answers():
    name = "cogfm_eval_tasks_answers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "answers.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


answers = _load_answers()


def load_test_set(test_set: str, **_metadata) -> datasets.DatasetDict:
    """`custom_dataset` of every cogfm task (lm-eval also passes its metadata, which is not needed here)."""
    path = DATA_DIR / f"{test_set}.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such cogfm test set; the files in {DATA_DIR} are written by `python -m cogfm_hf.tasks export`"
        )
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


def answer_of(doc: dict, response: str) -> str:
    """The answer on the first answer line of a response ("" when there is none)."""
    found = answers.extract_answer(answers.first_answer(response), doc["answer_pattern"], doc["answer_candidates"])
    return found if found is not None else ""


def extract_answers(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """A `custom` filter: every response of every document reduced to its answer."""
    return [[answer_of(doc, response) for response in responses] for responses, doc in zip(resps, docs)]


def score_self_correction(doc: dict, results: list[str]) -> dict:
    """After a planted mistake: did the model take it back (marker_rate), and reach the right answer too
    (self_corrected)? After a correct partial step: did it take back what was right (false_marker_rate)?"""
    response = results[0]
    marked = answers.starts_with_marker(response)
    correct = answer_of(doc, response) == doc["answer"]
    if doc["planted"]:
        return {
            "self_corrected": float(marked and correct),
            "marker_rate": float(marked),
            "exact_match": float(correct),
        }
    return {"false_marker_rate": float(marked), "exact_match": float(correct)}
