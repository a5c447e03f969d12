"""Self-correction ("retry") data, after Physics of Language Models Part 2.2.

Before each solution step, with probability p, write a plausible wrong start of a step, then the
BACK marker, then go on; this repeats (a second mistake before the same step has probability p^2,
...). The *real* variant asks the task for a realistic mistake (a variable not computable yet, a
wrong digit, an unsupported conclusion, a wrong traced value); the *weak* variant writes the head of
a later step instead (cheap to make, and in Part 2.2 only useful at small p), so the last step of a
solution never gets a weak mistake. The *on_policy* variant draws the mistake from a trained
model's own distribution (`on_policy.ModelMistakes`: the model's wrong start of that step, given that
it errs). Every mistake and marker is recorded as a character span, and deleting all spans gives back
the clean solution exactly.
"""

from __future__ import annotations

import dataclasses
import random

from .answers import ANSWER_PREFIX, BACK
from .base import Example, ReasoningTask

VARIANTS = ("real", "weak", "on_policy")


def check_retry(p: float, variant: str, task: ReasoningTask) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"retry p must be a number in [0, 1), got {p!r}")
    if variant not in VARIANTS:
        raise ValueError(f"retry variant must be one of {VARIANTS}, got {variant!r}")
    if p > 0 and not task.writes_steps:
        raise ValueError(
            f"retry_p {p} asks for retry data, which is written into a solution's steps: {task.name} has none (its "
            "solution is the answer alone; retry data comes from our own generators); set retry_p to 0 for it"
        )


def weak_mistake(example: Example, step_index: int, rng: random.Random, task: ReasoningTask) -> str | None:
    later = range(step_index + 1, len(example.steps))
    return task.head_of(example, rng.choice(later)) if later else None


def add_retries(
    example: Example, task: ReasoningTask, p: float, rng: random.Random, variant: str = "real", model_mistakes=None
) -> Example:
    """A copy of `example` whose solution carries retry mistakes (see the module docstring); the on_policy variant
    draws them from `model_mistakes` (an `on_policy.ModelMistakes`)."""
    check_retry(p, variant, task)
    if (variant == "on_policy") != (model_mistakes is not None):
        raise ValueError("retry: the on_policy variant, and only it, draws its mistakes from a model: give both")
    draw_mistake = {
        "real": task.mistake,
        "weak": lambda example, index, rng: weak_mistake(example, index, rng, task),
        "on_policy": model_mistakes.mistake if model_mistakes is not None else None,
    }[variant]
    pieces: list[str] = []
    error_spans: list[tuple[int, int]] = []
    marker_spans: list[tuple[int, int]] = []
    length = 0

    def write(text: str, spans: list | None = None):
        nonlocal length
        pieces.append(text)
        if spans is not None:
            spans.append((length, length + len(text)))
        length += len(text)

    for index, step in enumerate(example.steps):
        while p > 0 and rng.random() < p:
            wrong = draw_mistake(example, index, rng)
            if not wrong:
                break
            write(wrong, error_spans)
            write(BACK, marker_spans)
        write(step)
    write(f"{ANSWER_PREFIX}{example.answer}\n")
    return dataclasses.replace(example, solution="".join(pieces), error_spans=error_spans, marker_spans=marker_spans)


def strip_retries(solution: str, error_spans, marker_spans) -> str:
    """The clean solution: `solution` without its error and marker spans."""
    removed = sorted(list(error_spans) + list(marker_spans))
    kept, position = [], 0
    for start, end in removed:
        kept.append(solution[position:start])
        position = end
    kept.append(solution[position:])
    return "".join(kept)
