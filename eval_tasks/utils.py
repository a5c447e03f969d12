"""What the cogfm lm-eval tasks call: load a shipped test set, read answers, score self-correction.

lm-eval loads this file by path, from wherever `--include_path` points and whatever the current
directory is, in a process that may not have `cogfm_hf` installed: so it imports only lm-eval's own
dependencies, finds the data beside itself, and reads answers with `answers.py` (an exported copy of
`cogfm_hf/tasks/answers.py`).
"""

import functools
import importlib.util
import json
import logging
import sys
from pathlib import Path

import datasets
import numpy as np
from lm_eval.api.task import ConfigurableTask

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


def load_test_set(test_set: str) -> datasets.DatasetDict:
    """The shipped test set `data/<test_set>.jsonl`, as lm-eval's `test` split. Read once per process while the
    file is unchanged: the in-loop evaluations build every task again each time, and making the 91 datasets took
    ~2 s of each (datasets fingerprints every new one)."""
    path = DATA_DIR / f"{test_set}.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such cogfm test set; the files in {DATA_DIR} are written by `python -m cogfm_hf.tasks export`"
        )
    stat = path.stat()
    return _read_test_set(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _read_test_set(path: Path, modified_ns: int, size: int) -> datasets.DatasetDict:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


class TestSetTask(ConfigurableTask):
    """The class of every cogfm task (`class:` in the templates): a task that reads its shipped test set
    (`dataset_kwargs: {test_set: NAME}`) instead of downloading a dataset. A class rather than lm-eval's
    `custom_dataset` hook, which warns on every task that it could take `--metadata`."""

    def __init__(self, config: dict):
        super().__init__(config={key: value for key, value in config.items() if key != "class"})

    def download(self, dataset_kwargs: dict | None = None, **kwargs) -> None:
        self.dataset = load_test_set(**(dataset_kwargs or {}))


def answer_of(doc: dict, response: str) -> str:
    """The answer on the first answer line of a response ("" when there is none)."""
    found = answers.extract_answer(answers.first_answer(response), doc["answer_pattern"], doc["answer_candidates"])
    return found if found is not None else ""


def extract_answers(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """A `custom` filter: every response of every document reduced to its answer."""
    return [[answer_of(doc, response) for response in responses] for responses, doc in zip(resps, docs)]


def score_self_correction(doc: dict, results: list[str]) -> dict:
    """After a planted mistake: did the model take it back (marker_rate), and reach the right answer too
    (self_corrected)? After a correct partial step: did it take back what was right (false_marker_rate)?
    A rate that does not apply to the item is NaN (see `mean_where_defined`): every item scores every metric,
    so lm-eval counts the same items for each."""
    response = results[0]
    marked = float(answers.starts_with_marker(response))
    correct = float(answer_of(doc, response) == doc["answer"])
    if doc["planted"]:
        return {
            "self_corrected": marked * correct,
            "marker_rate": marked,
            "false_marker_rate": NOT_APPLICABLE,
            "exact_match": correct,
        }
    return {
        "self_corrected": NOT_APPLICABLE,
        "marker_rate": NOT_APPLICABLE,
        "false_marker_rate": marked,
        "exact_match": correct,
    }


NOT_APPLICABLE = float("nan")


def score_reasoning_gym(doc: dict, results: list[str]) -> dict:
    """Exact match of the extracted answer, and reasoning-gym's `score_answer` of it (NaN without reasoning-gym)."""
    answer = results[0]
    return {
        "exact_match": float(answer == doc["answer"]),
        "rg_score": reasoning_gym_score(doc["reasoning_gym"], answer),
    }


@functools.cache
def _reasoning_gym_scorer(dataset: str):
    try:
        from reasoning_gym import get_score_answer_fn
    except ImportError:
        logging.getLogger(__name__).warning(
            "reasoning-gym is not installed: rg_score is NaN (exact_match needs nothing); pip install reasoning-gym"
        )
        return None
    return get_score_answer_fn(dataset)


def reasoning_gym_score(entry: dict, answer: str) -> float:
    scorer = _reasoning_gym_scorer(entry["dataset"])
    return NOT_APPLICABLE if scorer is None else float(scorer(answer, entry))


def mean_where_defined(values: list[float]) -> float:
    """The aggregation of the self-correction rates: the mean over the items the rate applies to (planted
    mistakes, or correct steps), NaN when there are none (e.g. under a `--limit` that takes only one kind)."""
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else NOT_APPLICABLE
