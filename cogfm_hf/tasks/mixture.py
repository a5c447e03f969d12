"""A weighted mixture of generators: one deterministic, endless stream of training examples.

Example `i` is a pure function of (seed, i) — random access, no state — so data loaders can shard the
stream and a resumed run regenerates exactly what it saw. Only training templates are ever drawn.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, Features, Sequence, Value

from ..config import Config
from .base import Example, seeded_rng
from .on_policy import model_mistakes_of
from .retry import add_retries, check_retry


@dataclass
class MixtureComponent(Config):
    """One generator in the mixture. `difficulty` (int or (low, high)) sets the task's difficulty knob
    and defaults to the task's training range; `knobs` sets any other knob. What depends on the task (its knobs,
    their ranges) is checked by `Mixture`, which knows the task registry."""

    task: str
    weight: float = 1.0
    difficulty: int | tuple[int, int] | None = None
    retry_p: float = 0.0
    retry_variant: str = "real"
    retry_model: str | None = None  # the on_policy variant's checkpoint, whose own mistakes it writes
    knobs: dict = field(default_factory=dict)


RECORD_FEATURES = Features(
    {
        "task": Value("string"),
        "prompt": Value("string"),
        "steps": Sequence(Value("string")),
        "answer": Value("string"),
        "difficulty": Value("int32"),
        "template_id": Value("string"),
        "solution": Value("string"),
        "text": Value("string"),
        "error_spans": Sequence(Sequence(Value("int32"), length=2)),
        "marker_spans": Sequence(Sequence(Value("int32"), length=2)),
    }
)


def generator_digest(task_names: list[str]) -> str:
    """Identifies the code that writes these tasks' examples: the source of each task's class and base classes, of
    this module (mixing, retry data, the model's own mistakes), and of every module they import from this package,
    transitively. A data build keyed by it is rebuilt when a generator changes, even under the same task name."""
    from . import get_task  # the registry imports this module

    pending = {__name__} | {cls.__module__ for name in task_names for cls in type(get_task(name)).__mro__}
    modules: dict[str, Path] = {}
    while pending:
        name = pending.pop()
        if name in modules or not name.startswith(__package__ + "."):
            continue
        modules[name] = Path(importlib.import_module(name).__file__)
        for node in ast.walk(ast.parse(modules[name].read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:  # `from .x import y`
                pending.add(f"{__package__}.{node.module}")
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + modules[name].read_bytes())
    return digest.hexdigest()


class Mixture:
    def __init__(self, components: list[MixtureComponent | dict], seed: int = 0):
        from . import get_task  # the registry imports this module

        if not components:
            raise ValueError("mixture: give at least one component")
        self.seed = seed
        self.components: list[MixtureComponent] = []
        self._resolved = []
        for index, component in enumerate(components):
            if isinstance(component, dict):
                component = MixtureComponent.from_dict(component, f"mixture component {index}")
            where = f"mixture component {index} ({component.task})"
            try:
                task = get_task(component.task)
                if not component.weight > 0:
                    raise ValueError(f"weight must be > 0, got {component.weight!r}")
                check_retry(component.retry_p, component.retry_variant, task)
                if (component.retry_variant == "on_policy") != (component.retry_model is not None):
                    raise ValueError(
                        "retry_model (a checkpoint folder) is what retry_variant on_policy draws its mistakes from: "
                        f"give both or neither (got retry_variant {component.retry_variant!r}, "
                        f"retry_model {component.retry_model!r})"
                    )
                model_mistakes = model_mistakes_of(component.retry_model) if component.retry_model else None
                difficulty = (
                    component.difficulty
                    if component.difficulty is not None
                    else task.train_knobs[task.difficulty_knob]
                )
                if isinstance(difficulty, list):
                    difficulty = tuple(difficulty)
                knobs = task.knobs(**{**task.train_knobs, **component.knobs, task.difficulty_knob: difficulty})
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            self.components.append(component)
            self._resolved.append((task, knobs, model_mistakes))
        self.weights = [c.weight for c in self.components]

    def difficulty_ranges(self) -> dict[str, tuple[int, int]]:
        """The difficulty range each task is trained on (the union over its components)."""
        ranges: dict[str, tuple[int, int]] = {}
        for task, knobs, _ in self._resolved:
            low, high = knobs[task.difficulty_knob]
            old = ranges.get(task.name, (low, high))
            ranges[task.name] = (min(low, old[0]), max(high, old[1]))
        return ranges

    def example(self, index: int) -> Example:
        rng = seeded_rng("mixture", self.seed, index)
        choice = rng.choices(range(len(self.components)), weights=self.weights)[0]
        component, (task, knobs, model_mistakes) = self.components[choice], self._resolved[choice]
        example = task.sample_split(rng, "train", knobs)
        if component.retry_p > 0:
            example = add_retries(example, task, component.retry_p, rng, component.retry_variant, model_mistakes)
        return example

    def __iter__(self) -> Iterator[Example]:
        return (self.example(i) for i in itertools.count())

    def to_dataset(self, num_examples: int, start: int = 0) -> Dataset:
        """Examples [start, start + num_examples) as a `datasets.Dataset` (spans as offsets into `text`)."""
        records = [self.example(i).to_record() for i in range(start, start + num_examples)]
        return Dataset.from_list(records, features=RECORD_FEATURES)
