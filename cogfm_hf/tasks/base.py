"""The interface every reasoning generator implements, and what they share.

An `Example` is a prompt, a solution written as steps, and a final answer line. Generators are
deterministic functions of a `random.Random`; the task decides the text, the difficulty, the
solution's *template* (its shape with names and values abstracted away) and, for self-correction
data, what a plausible mistake before a given step looks like.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from .answers import ANSWER_PREFIX, extract_answer

# Fraction of templates reserved for evaluation. Changing it changes every split: bump EXPORT_VERSION.
HELD_OUT_FRACTION = 0.2

Range = int | tuple[int, int]


def template_id(shape: str) -> str:
    """A stable 16-hex-digit id for a solution shape (sha256: the same on every machine and run)."""
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def normalised_question(text: str) -> str:
    """What two questions are compared by: case-folded, whitespace collapsed, trailing whitespace removed."""
    return " ".join(text.casefold().split())


def question_key(text: str) -> str:
    """A short, stable hash of the normalised question: the held-out split and the build's leak check read it."""
    return template_id("question|" + normalised_question(text))


def is_held_out(template: str) -> bool:
    return int(template[:8], 16) / 2**32 < HELD_OUT_FRACTION


def seeded_rng(*parts) -> random.Random:
    """A Random seeded from any parts (strings seed via sha512, never Python's salted hash())."""
    return random.Random(":".join(map(str, parts)))


def check_range(task: str, knob: str, value: Range, minimum: int) -> tuple[int, int]:
    """Normalise an int-or-(lo, hi) knob and check it, raising ValueError naming the knob."""
    low, high = (value, value) if isinstance(value, int) else tuple(value)
    if isinstance(low, bool) or not isinstance(low, int) or not isinstance(high, int) or low > high:
        raise ValueError(f"{task}: knob {knob!r} must be an int or a (low, high) pair with low <= high, got {value!r}")
    if low < minimum:
        raise ValueError(f"{task}: knob {knob!r} must be >= {minimum}, got {value!r}")
    return low, high


def draw(rng: random.Random, value: tuple[int, int]) -> int:
    return rng.randint(*value)


@dataclass
class Example:
    """One generated problem. `steps` concatenated plus the answer line form the clean solution;
    `solution` is what is trained on (with retry mistakes, if any). Spans are (start, end) character
    offsets into `solution`: `error_spans` cover each written mistake, `marker_spans` each BACK marker."""

    task: str
    prompt: str
    steps: list[str]
    answer: str
    difficulty: int
    template_id: str
    solution: str = ""
    error_spans: list[tuple[int, int]] = field(default_factory=list)
    marker_spans: list[tuple[int, int]] = field(default_factory=list)
    # Task-private facts about the problem that mistakes are built from (JSON-able).
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.solution:
            self.solution = self.clean_solution()

    def clean_solution(self) -> str:
        return "".join(self.steps) + f"{ANSWER_PREFIX}{self.answer}\n"

    @property
    def text(self) -> str:
        return self.prompt + self.solution

    @property
    def held_out(self) -> bool:
        return is_held_out(self.template_id)

    def to_record(self) -> dict:
        """A flat dict for datasets / JSONL; spans become offsets into `text` under `*_spans`."""
        record = dataclasses.asdict(self)
        offset = len(self.prompt)
        record["text"] = self.text
        record["error_spans"] = [[s + offset, e + offset] for s, e in self.error_spans]
        record["marker_spans"] = [[s + offset, e + offset] for s, e in self.marker_spans]
        del record["meta"]
        return record


class ReasoningTask:
    """Base class. Subclasses set `name`, `difficulty_knob`, `default_knobs`, `buckets`, and implement
    `check_knobs`, `sample` and `mistake`."""

    name: str = ""
    # Whose problems the exported test sets hold (a format variant of a task shares that task's questions).
    problems_of: str = ""
    difficulty_knob: str = ""
    default_knobs: dict = {}
    # Evaluation buckets: name -> (split kind "id"/"ood", knob overrides). Training uses `train_knobs`.
    buckets: dict[str, tuple[str, dict]] = {}
    train_knobs: dict = {}
    answer_pattern: str = r"-?\d+"
    # Whether a question has one template: then a training document asking a test item's question is a leak, and the
    # build refuses it (not so for rule induction, where a question showing 0 or 1 pairs is asked of many rules).
    question_determines_template: bool = True
    writes_steps: bool = True  # a scratchpad: what retry data, self-correction and next-step sets are made from
    lm_eval_template: str = "_generation_template_yaml"  # what the exported generation tasks include

    def knobs(self, **overrides) -> dict:
        unknown = set(overrides) - set(self.default_knobs)
        if unknown:
            raise ValueError(f"{self.name}: unknown knob(s) {sorted(unknown)}; known: {sorted(self.default_knobs)}")
        knobs = {**self.default_knobs, **overrides}
        self.check_knobs(knobs)
        return knobs

    def check_knobs(self, knobs: dict) -> None:
        raise NotImplementedError

    def sample(self, rng: random.Random, knobs: dict) -> Example:
        """One example with any template (train or held-out); `knobs` are already checked."""
        raise NotImplementedError

    def mistake(self, example: Example, step_index: int, rng: random.Random) -> str | None:
        """A plausible wrong start of step `step_index` (written, then retracted with BACK), or None."""
        raise NotImplementedError

    def generate(self, seed, split: str = "train", **knob_overrides) -> Iterator[Example]:
        """Endless examples of one split: "train" never yields a held-out template, "heldout" only those."""
        if split not in ("train", "heldout"):
            raise ValueError(f"{self.name}: split must be 'train' or 'heldout', got {split!r}")
        knobs = self.knobs(**knob_overrides)
        rng = seeded_rng(self.problems_of or self.name, split, seed)
        while True:
            yield self.sample_split(rng, split, knobs)

    def sample_split(self, rng: random.Random, split: str, knobs: dict, max_tries: int = 2000) -> Example:
        want_held_out = split == "heldout"
        for _ in range(max_tries):
            example = self.sample(rng, knobs)
            if example.held_out == want_held_out:
                return example
        raise ValueError(
            f"{self.name}: no {split} template found in {max_tries} draws with knobs {knobs}; "
            "these knobs allow too few distinct solution shapes — widen them."
        )

    def question_of(self, prompt: str) -> str:
        """What the build's leak check compares, within one task (in another format the same string may be another
        problem: `826+2=?` in addition_lsd is 628 + 2): '' where a question does not determine a template."""
        if not self.question_determines_template:
            return ""
        return f"{self.name}:{question_key(prompt)}"

    def answer_candidates(self, prompt: str) -> list[str] | None:
        """The only admissible answers, where the prompt names them (None: any answer-shaped token)."""
        return None

    def extract_answer(self, text: str, candidates: list[str] | None = None) -> str | None:
        return extract_answer(text, self.answer_pattern, candidates)

    def verify(self, example: Example, model_output: str) -> bool:
        return self.extract_answer(model_output, self.answer_candidates(example.prompt)) == example.answer

    def wrong_steps(self, example: Example, step_index: int, count: int, rng: random.Random) -> list[str] | None:
        """`count` distinct copies of step `step_index` with its written result wrong in one digit: the
        distractors of the next-step task. None where the step has no numeric result (or too few variants)."""
        results = example.meta.get("results")
        if not results:
            return None
        step = example.steps[step_index]
        start, end = results[step_index]
        value = step[start:end]
        if not value.lstrip("-").isdigit():
            return None
        digits = [i for i, c in enumerate(value) if c.isdigit()]
        variants = sorted(
            {
                value[:i] + d + value[i + 1 :]
                for i in digits
                for d in "0123456789"
                if d != value[i] and not (i == digits[0] and d == "0" and len(digits) > 1)
            }
        )
        if len(variants) < count:
            return None
        return [step[:start] + variant + step[end:] for variant in rng.sample(variants, count)]

    def head_of(self, example: Example, step_index: int) -> str:
        """The prefix naming what a step computes ("b=" / "dax from"): what a weak mistake writes."""
        return example.meta["heads"][step_index]
