"""The data recipe: every knob of a build, as typed config sections loaded from YAML and checked before any work.

A recipe is the `data:` section of a training recipe or a YAML file of its own. Unknown keys, wrong types, missing
paths and impossible values fail here (cogfm_hf.config), naming the field, before a single document is read.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..config import Config, RecipeError, read_yaml
from ..tasks.mixture import Mixture, MixtureComponent, generator_digest

SOURCE_TYPES = ("files", "hf_dataset", "tasks", "python_stdlib")
# Bump when a pipeline change alters what a build writes (cleaning, tokenizer, packing columns...): the
# fingerprint includes it, so existing builds are rebuilt rather than silently reused.
# 3: the recipe is fingerprinted as its typed config (every default written out), so builds made before are rebuilt
# (an existing output directory needs --overwrite, as for any other recipe change).
DATA_FORMAT_VERSION = 3
KINDS = ("prose", "code")


@dataclass
class SourceConfig(Config):
    """One input. `type`: files (a file or folder of .txt/.md/.py/.jsonl[.gz]/.parquet), hf_dataset (a
    `datasets` name or local path), tasks (the reasoning mixture of `cogfm_hf.tasks`), python_stdlib
    (this Python's standard library: its source as code, its docstrings as prose)."""

    name: str
    type: str
    path: str | None = None
    kind: str | None = None  # prose | code; files default by extension
    text_field: str = "text"
    # hf_dataset
    config: str | None = None
    split: str = "train"
    streaming: bool = False
    max_documents: int | None = None
    # tasks
    num_examples: int = 0
    mixture: list[MixtureComponent] = field(default_factory=list)
    seed: int = 0
    # python_stdlib
    max_files: int | None = None

    @property
    def section(self) -> str:  # built directly (not from a recipe), a source names itself in errors
        return f"source ({self.name})"

    def validate(self) -> None:
        if self.type not in SOURCE_TYPES:
            raise self.invalid("type", f"must be one of {SOURCE_TYPES}, got {self.type!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise self.invalid("kind", f"must be one of {KINDS}, got {self.kind!r}")
        if self.type == "files" and (not self.path or not Path(self.path).exists()):
            raise self.invalid("path", f"{self.path!r} does not exist")
        if self.type == "hf_dataset" and not self.path:
            raise self.invalid("path", "give a dataset name or a local dataset path")
        if self.type == "tasks":
            if self.num_examples < 1:
                raise self.invalid("num_examples", f"must be a positive integer, got {self.num_examples!r}")
            try:
                Mixture(self.mixture, seed=self.seed)
            except ValueError as error:
                raise self.invalid("mixture", str(error)) from None


@dataclass
class CleanConfig(Config):
    section: ClassVar[str] = "data.clean"

    normalization: str = "NFC"  # unicodedata form
    min_chars: int = 20
    max_chars: int = 200_000
    # Anything longer is not a document but a dump: skipped at read time and listed by file:line.
    max_document_chars: int = 2_000_000

    def validate(self) -> None:
        if not 0 <= self.min_chars < self.max_chars <= self.max_document_chars:
            raise self.invalid("", "need 0 <= min_chars < max_chars <= max_document_chars")
        try:
            unicodedata.normalize(self.normalization, "x")
        except ValueError:
            raise self.invalid(
                "normalization", f"must be NFC, NFKC, NFD or NFKD, got {self.normalization!r}"
            ) from None


@dataclass
class FilterConfig(Config):
    section: ClassVar[str] = "data.filters"

    # Keyword arguments of datatrove's filters (their own names and defaults); null switches one off.
    prose: dict[str, dict | None] | None = field(
        default_factory=lambda: {
            "gopher_repetition": {},
            "gopher_quality": {"min_doc_words": 20},
            "c4": {"filter_no_terminal_punct": False},
            "fineweb": {},
        }
    )
    # Code filters in the spirit of StarCoder/The Stack.
    code: dict | None = field(
        default_factory=lambda: {
            "max_line_length": 1000,
            "max_mean_line_length": 100.0,
            "min_alnum_fraction": 0.25,
        }
    )

    def validate(self) -> None:
        from .filters import PROSE_FILTERS, CodeQualityFilter

        for name, kwargs in (self.prose or {}).items():
            if name not in PROSE_FILTERS:
                raise self.invalid(f"prose.{name}", f"unknown filter; choose from {sorted(PROSE_FILTERS)}")
            unknown = sorted(set(kwargs or {}) - _keyword_arguments(PROSE_FILTERS[name]))
            if unknown:
                raise self.invalid(
                    f"prose.{name}",
                    f"unknown threshold(s) {unknown}; accepted: {sorted(_keyword_arguments(PROSE_FILTERS[name]))}",
                )
        unknown = sorted(set(self.code or {}) - _keyword_arguments(CodeQualityFilter))
        if unknown:
            raise self.invalid(
                "code", f"unknown threshold(s) {unknown}; accepted: {sorted(_keyword_arguments(CodeQualityFilter))}"
            )


@dataclass
class DedupConfig(Config):
    section: ClassVar[str] = "data.dedup"

    exact: bool = True
    near: bool = True
    threshold: float = 0.8  # Jaccard similarity of word n-grams above which two documents are near-duplicates
    ngram: int = 5
    num_hashes: int = 112

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise self.invalid("threshold", f"must be in (0, 1), got {self.threshold!r}")
        if self.ngram < 1 or self.num_hashes < 2:
            raise self.invalid("", "ngram must be >= 1 and num_hashes >= 2")


@dataclass
class DecontaminationConfig(Config):
    section: ClassVar[str] = "data.decontamination"

    enabled: bool = True
    ngram: int = 13
    eval_dir: str | None = None  # default: the test sets in eval_tasks/data

    def validate(self) -> None:
        if self.ngram < 3:
            raise self.invalid("ngram", f"must be >= 3, got {self.ngram!r}")
        if self.eval_dir and not Path(self.eval_dir).is_dir():
            raise self.invalid("eval_dir", f"{self.eval_dir!r} is not a directory")


@dataclass
class TokenizerConfig(Config):
    section: ClassVar[str] = "data.tokenizer"

    path: str | None = None  # reuse this tokenizer directory instead of training one
    vocab_size: int = 4096
    train_chars: int = 5_000_000
    min_frequency: int = 2

    def validate(self) -> None:
        if self.path is not None:
            if not (Path(self.path) / "tokenizer.json").is_file():
                raise self.invalid("path", f"{self.path!r} holds no tokenizer.json")
        elif self.vocab_size < 300:
            raise self.invalid(
                "vocab_size", f"must be >= 300 (256 bytes + special tokens + merges), got {self.vocab_size}"
            )


@dataclass
class PackConfig(Config):
    section: ClassVar[str] = "data.pack"

    seq_len: int = 512
    # Pack only documents of equal difficulty together, so every sequence has one difficulty for the curriculum.
    group_by_difficulty: bool = True

    def validate(self) -> None:
        if self.seq_len < 8:
            raise self.invalid("seq_len", f"must be >= 8, got {self.seq_len}")


@dataclass
class DataRecipe(Config):
    section: ClassVar[str] = "data"

    output_dir: str
    sources: list[SourceConfig]
    workers: int = 2
    clean: CleanConfig = field(default_factory=CleanConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pack: PackConfig = field(default_factory=PackConfig)

    def validate(self) -> None:
        if self.workers < 1:
            raise self.invalid("workers", f"must be a positive integer, got {self.workers!r}")
        if not self.sources:
            raise self.invalid("sources", "give a non-empty list of sources")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise self.invalid("sources", f"source names must be unique, got {names}")

    def fingerprint(self) -> str:
        """Identifies the build: same recipe, task generators' code and data format -> same output."""
        from ..tasks.export import EXPORT_VERSION

        task_names = sorted({c.task for source in self.sources if source.type == "tasks" for c in source.mixture})
        blob = json.dumps(
            {
                "recipe": self.to_dict(),
                "tasks": EXPORT_VERSION,
                "generators": generator_digest(task_names) if task_names else None,
                "format": DATA_FORMAT_VERSION,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def task_difficulty_tops(self) -> dict[str, int]:
        """The hardest difficulty each reasoning task is trained on, over the recipe's task sources."""
        tops: dict[str, int] = {}
        for source in self.sources:
            if source.type == "tasks":
                for task, (_, high) in Mixture(source.mixture).difficulty_ranges().items():
                    tops[task] = max(high, tops.get(task, high))
        return tops


def load_recipe(path_or_mapping: str | Path | dict) -> DataRecipe:
    """A data recipe from a YAML file or a mapping; a training recipe's `data:` section is taken when present.
    Relative paths resolve against the current directory, like every CLI path."""
    if not isinstance(path_or_mapping, (str, Path)):
        return DataRecipe.from_dict(path_or_mapping)
    values = read_yaml(path_or_mapping)
    try:
        return DataRecipe.from_dict(values.get("data", values) if isinstance(values, dict) else values)
    except RecipeError as error:
        raise error.in_file(path_or_mapping) from None


def _keyword_arguments(filter_class) -> set[str]:
    return set(inspect.signature(filter_class.__init__).parameters) - {"self", "exclusion_writer"}
