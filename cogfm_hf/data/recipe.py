"""The data recipe: every knob of a build, as dataclasses loaded from YAML and checked before any work.

A recipe is the `data:` section of a training recipe or a YAML file of its own. Unknown keys, missing
paths and impossible values fail here, naming the field, before a single document is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCE_TYPES = ("files", "hf_dataset", "tasks", "python_stdlib")
# Bump when a pipeline change alters what a build writes (cleaning, tokenizer, packing columns...): the
# fingerprint includes it, so existing builds are rebuilt rather than silently reused.
DATA_FORMAT_VERSION = 2
KINDS = ("prose", "code")


class RecipeError(ValueError):
    """A recipe mistake, reported before any work starts."""


@dataclass
class SourceConfig:
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
    mixture: list = field(default_factory=list)
    seed: int = 0
    # python_stdlib
    max_files: int | None = None


@dataclass
class CleanConfig:
    normalization: str = "NFC"  # unicodedata form
    min_chars: int = 20
    max_chars: int = 200_000
    # Anything longer is not a document but a dump: skipped at read time and listed by file:line.
    max_document_chars: int = 2_000_000


@dataclass
class FilterConfig:
    # Keyword arguments of datatrove's filters (their own names and defaults); null switches one off.
    prose: dict = field(
        default_factory=lambda: {
            "gopher_repetition": {},
            "gopher_quality": {"min_doc_words": 20},
            "c4": {"filter_no_terminal_punct": False},
            "fineweb": {},
        }
    )
    # Code filters in the spirit of StarCoder/The Stack.
    code: dict = field(
        default_factory=lambda: {
            "max_line_length": 1000,
            "max_mean_line_length": 100.0,
            "min_alnum_fraction": 0.25,
        }
    )


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    threshold: float = 0.8  # Jaccard similarity of word n-grams above which two documents are near-duplicates
    ngram: int = 5
    num_hashes: int = 112


@dataclass
class DecontaminationConfig:
    enabled: bool = True
    ngram: int = 13
    eval_dir: str | None = None  # default: the test sets in eval_tasks/data


@dataclass
class TokenizerConfig:
    path: str | None = None  # reuse this tokenizer directory instead of training one
    vocab_size: int = 4096
    train_chars: int = 5_000_000
    min_frequency: int = 2


@dataclass
class PackConfig:
    seq_len: int = 512
    # Pack only documents of equal difficulty together, so every sequence has one difficulty for the curriculum.
    group_by_difficulty: bool = True


@dataclass
class DataRecipe:
    output_dir: str
    sources: list[SourceConfig]
    workers: int = 2
    clean: CleanConfig = field(default_factory=CleanConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pack: PackConfig = field(default_factory=PackConfig)

    def fingerprint(self) -> str:
        """Identifies the build: same recipe, task-generator version and data format -> same output."""
        from ..tasks.export import EXPORT_VERSION

        blob = json.dumps(
            {"recipe": dataclasses.asdict(self), "tasks": EXPORT_VERSION, "format": DATA_FORMAT_VERSION},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {}
    for name, value in data.items():
        nested = {
            "clean": CleanConfig,
            "filters": FilterConfig,
            "dedup": DedupConfig,
            "decontamination": DecontaminationConfig,
            "tokenizer": TokenizerConfig,
            "pack": PackConfig,
        }
        if cls is DataRecipe and name in nested:
            value = _build(nested[name], value or {}, f"{where}.{name}")
        elif cls is DataRecipe and name == "sources":
            if not isinstance(value, list) or not value:
                raise RecipeError(f"{where}.sources: give a non-empty list of sources")
            value = [_build(SourceConfig, s, f"{where}.sources[{i}]") for i, s in enumerate(value)]
        values[name] = value
    missing = [
        f.name
        for f in known.values()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values
    ]
    if missing:
        raise RecipeError(f"{where}: missing required key(s) {missing}")
    return cls(**values)


def load_recipe(path_or_dict) -> DataRecipe:
    """Parse and check a data recipe (a YAML path, or a dict). A training recipe's `data:` section is
    taken when present. Relative paths resolve against the current directory, like every CLI path."""
    if isinstance(path_or_dict, (str, Path)):
        path = Path(path_or_dict)
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise RecipeError(f"{path}: not valid YAML: {error}") from None
        data = data.get("data", data) if isinstance(data, dict) else data
        where = str(path)
    else:
        data, where = path_or_dict, "recipe"
    recipe = _build(DataRecipe, data, where)
    check_recipe(recipe, where)
    return recipe


def check_recipe(recipe: DataRecipe, where: str = "recipe") -> None:
    from ..tasks import Mixture

    def fail(field_name, message):
        raise RecipeError(f"{where}: {field_name}: {message}")

    if not isinstance(recipe.workers, int) or recipe.workers < 1:
        fail("workers", f"must be a positive integer, got {recipe.workers!r}")
    names = [s.name for s in recipe.sources]
    if len(set(names)) != len(names):
        fail("sources", f"source names must be unique, got {names}")
    for i, source in enumerate(recipe.sources):
        at = f"sources[{i}] ({source.name})"
        if source.type not in SOURCE_TYPES:
            fail(f"{at}.type", f"must be one of {SOURCE_TYPES}, got {source.type!r}")
        if source.kind is not None and source.kind not in KINDS:
            fail(f"{at}.kind", f"must be one of {KINDS}, got {source.kind!r}")
        if source.type == "files":
            if not source.path or not Path(source.path).exists():
                fail(f"{at}.path", f"{source.path!r} does not exist")
        if source.type == "hf_dataset" and not source.path:
            fail(f"{at}.path", "give a dataset name or a local dataset path")
        if source.type == "tasks":
            if not isinstance(source.num_examples, int) or source.num_examples < 1:
                fail(f"{at}.num_examples", f"must be a positive integer, got {source.num_examples!r}")
            try:
                Mixture(source.mixture, seed=source.seed)
            except ValueError as error:
                fail(f"{at}.mixture", str(error))
    clean = recipe.clean
    if not 0 <= clean.min_chars < clean.max_chars <= clean.max_document_chars:
        fail("clean", "need 0 <= min_chars < max_chars <= max_document_chars")
    try:
        import unicodedata

        unicodedata.normalize(clean.normalization, "x")
    except ValueError:
        fail("clean.normalization", f"must be NFC, NFKC, NFD or NFKD, got {clean.normalization!r}")
    _check_filter_kwargs(recipe.filters, fail)
    dedup = recipe.dedup
    if not 0.0 < dedup.threshold < 1.0:
        fail("dedup.threshold", f"must be in (0, 1), got {dedup.threshold!r}")
    if dedup.ngram < 1 or dedup.num_hashes < 2:
        fail("dedup", "ngram must be >= 1 and num_hashes >= 2")
    if recipe.decontamination.ngram < 3:
        fail("decontamination.ngram", f"must be >= 3, got {recipe.decontamination.ngram!r}")
    if recipe.decontamination.eval_dir and not Path(recipe.decontamination.eval_dir).is_dir():
        fail("decontamination.eval_dir", f"{recipe.decontamination.eval_dir!r} is not a directory")
    tokenizer = recipe.tokenizer
    if tokenizer.path is not None:
        if not (Path(tokenizer.path) / "tokenizer.json").is_file():
            fail("tokenizer.path", f"{tokenizer.path!r} holds no tokenizer.json")
    elif tokenizer.vocab_size < 300:
        fail(
            "tokenizer.vocab_size", f"must be >= 300 (256 bytes + special tokens + merges), got {tokenizer.vocab_size}"
        )
    if recipe.pack.seq_len < 8:
        fail("pack.seq_len", f"must be >= 8, got {recipe.pack.seq_len}")


def _check_filter_kwargs(filters: FilterConfig, fail) -> None:
    from .filters import PROSE_FILTERS, CodeQualityFilter

    for name, kwargs in (filters.prose or {}).items():
        if name not in PROSE_FILTERS:
            fail(f"filters.prose.{name}", f"unknown filter; choose from {sorted(PROSE_FILTERS)}")
        if kwargs is None:
            continue
        accepted = set(inspect.signature(PROSE_FILTERS[name].__init__).parameters) - {"self", "exclusion_writer"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            fail(f"filters.prose.{name}", f"unknown threshold(s) {unknown}; accepted: {sorted(accepted)}")
    accepted = set(inspect.signature(CodeQualityFilter.__init__).parameters) - {"self", "exclusion_writer"}
    unknown = sorted(set(filters.code or {}) - accepted)
    if unknown:
        fail("filters.code", f"unknown threshold(s) {unknown}; accepted: {sorted(accepted)}")
