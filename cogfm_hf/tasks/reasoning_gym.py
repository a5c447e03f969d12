"""reasoning-gym's seeded generators as task sources: `{task: "rg:basic_arithmetic", difficulty: [1, 2]}`.

reasoning-gym (pinned in setup.cfg; it runs offline) ships about a hundred procedural reasoning datasets, each with a
verifier (`score_answer`, which may give partial credit) and a curriculum: attributes such as the number of terms or
digits, each with a list of levels. Our difficulty knob `level` d sets every attribute of the task's curriculum to its
level d - 1 (the highest where an attribute has fewer levels), taking that level alone rather than everything below
it (reasoning-gym's `upper_bound` mode), so difficulty 3 means third-level problems only; docs/tasks.md lists what
each level is for the tasks below.

What differs from our own generators:
- the held-out split is by question, not by solution template: an item is held out when a hash of its normalised
  question (`normalised_question`) falls in the held-out 20%, and the data build refuses any training document whose
  normalised question equals a test item's;
- there is no scratchpad: the solution is the answer line alone, so there are no steps to plant mistakes in, and a
  non-zero `retry_p` is refused (retry data is written by our own generators);
- only the tasks in `REASONING_GYM_TASKS` are offered: each has exported test sets (so an lm-eval run needs no
  reasoning-gym install) and an answer that our exact-match reading extracts; the exported items carry
  reasoning-gym's own entry, and the lm-eval tasks report its `score_answer` as `rg_score` beside `exact_match`
  where reasoning-gym is installed.
"""

from __future__ import annotations

import functools
import json
import random
import re

from .base import Example, ReasoningTask, check_range, draw, question_key

PREFIX = "rg:"
# Every item is reasoning-gym's item `index` of the level's dataset under this seed (its items are Random(seed +
# index)): drawing the index from our stream makes an example a function of our seed alone.
REASONING_GYM_SEED = 0
INDEX_SPACE = 10**9
# The tasks offered, with the answer pattern our exact match reads (their answers are single integers).
REASONING_GYM_TASKS = {
    "basic_arithmetic": r"-?\d+",  # math: + - * / over 2-6 terms of 1-4 digits
    "count_bits": r"\d+",  # code: the 1 bits of a number
    "letter_counting": r"\d+",  # text: a letter's occurrences in a phrase
}


def task_name(dataset: str) -> str:
    """Our name of a reasoning-gym dataset: `rg_<dataset>` (lm-eval task and file names cannot hold `:`)."""
    return f"rg_{dataset}"


def _curriculum_module():
    from reasoning_gym import factory  # imported on first use: ~1 s, and only runs that draw from it pay it
    from reasoning_gym.coaching.base_curriculum import DefaultCurriculumContext, RangeAttributeMode

    return factory, DefaultCurriculumContext(mode=RangeAttributeMode.UPPER_BOUND)


class ReasoningGymTask(ReasoningTask):
    difficulty_knob = "level"
    default_knobs = dict(level=1)
    train_knobs = dict(level=(1, 2))
    buckets = {
        **{f"level{k}": ("id", dict(level=k)) for k in (1, 2)},
        **{f"level{k}": ("ood", dict(level=k)) for k in (3, 4)},
    }
    writes_steps = False
    lm_eval_template = "_reasoning_gym_template_yaml"

    def __init__(self, dataset: str):
        if dataset not in REASONING_GYM_TASKS:
            raise ValueError(
                f"reasoning-gym task {dataset!r} is not offered; choose one of {sorted(REASONING_GYM_TASKS)} (a new "
                "one needs an entry in REASONING_GYM_TASKS with its answer pattern, and exported test sets)"
            )
        self.dataset = dataset
        self.name = task_name(dataset)
        self.answer_pattern = REASONING_GYM_TASKS[dataset]

    @functools.cached_property
    def levels(self) -> dict[str, list]:
        """The curriculum: attribute -> its levels (difficulty d takes entry d - 1, or the last)."""
        factory, _ = _curriculum_module()
        return {
            name: list(attribute.levels)
            for name, attribute in factory.create_curriculum(self.dataset).attributes.items()
        }

    @property
    def max_level(self) -> int:
        return max(len(levels) for levels in self.levels.values())

    def check_knobs(self, knobs):
        knobs["level"] = check_range(self.name, "level", knobs["level"], 1)
        if knobs["level"][1] > self.max_level:
            raise ValueError(
                f"{self.name}: knob 'level' must be <= {self.max_level} (the levels of reasoning-gym's curriculum: "
                f"{self.levels}), got {knobs['level']!r}"
            )

    @functools.cache
    def dataset_at(self, level: int):
        factory, context = _curriculum_module()
        curriculum = factory.create_curriculum(self.dataset)
        curriculum.set_global_level(level - 1)
        config = curriculum.generate_configuration({"seed": REASONING_GYM_SEED, "size": INDEX_SPACE}, context)
        return factory.DATASETS[self.dataset][0](config=config)

    def sample(self, rng: random.Random, knobs: dict) -> Example:
        level = draw(rng, knobs["level"])
        index = rng.randrange(INDEX_SPACE)
        entry = self.dataset_at(level)[index]
        question, answer = entry["question"].strip(), str(entry["answer"])
        if not re.fullmatch(self.answer_pattern, answer):
            raise ValueError(
                f"{self.name}: reasoning-gym item {index} at level {level} has the answer {answer!r}, which the "
                f"exact match cannot read (pattern {self.answer_pattern!r})"
            )
        return Example(
            task=self.name,
            prompt=question + "\n",
            steps=[],
            answer=answer,
            difficulty=level,
            template_id=question_key(question),
            # What reasoning-gym's score_answer reads, JSON-normalised (its metadata holds tuples).
            meta=dict(reasoning_gym=json.loads(json.dumps(dict(dataset=self.dataset, **entry)))),
        )

    def mistake(self, example, step_index, rng):
        return None  # no steps: retry data is refused for these tasks (Mixture)


def reasoning_gym_tasks() -> list[ReasoningGymTask]:
    return [ReasoningGymTask(dataset) for dataset in REASONING_GYM_TASKS]
