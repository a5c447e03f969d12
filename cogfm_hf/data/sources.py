"""Reading every source of a recipe into datatrove Documents, with counted skips.

Work is split into units (a file, a dataset shard, a range of generated examples) dealt round-robin
to the pipeline's ranks. A bad record never raises: it is skipped, counted by reason, and listed by
`file:line` in `skips/<rank>.json`, which the build report merges.
"""

from __future__ import annotations

import ast
import gzip
import json
import sysconfig
import zlib
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from .recipe import CleanConfig, SourceConfig

CODE_SUFFIXES = {".py"}
TEXT_SUFFIXES = {".txt", ".md", ".rst"}
RECORD_SUFFIXES = {".jsonl", ".jsonl.gz", ".parquet"}
TASK_UNIT = 1000  # generated examples per work unit


def _suffix(path: Path) -> str:
    return ".jsonl.gz" if path.name.endswith(".jsonl.gz") else path.suffix


def list_files(root: Path) -> list[Path]:
    """Readable files under `root` (itself if a file), sorted so every rank agrees on the order."""
    if root.is_file():
        return [root]
    wanted = CODE_SUFFIXES | TEXT_SUFFIXES | RECORD_SUFFIXES
    return sorted(p for p in root.rglob("*") if p.is_file() and _suffix(p) in wanted)


def stdlib_files(max_files: int | None) -> list[Path]:
    """The standard library's own modules (no tests, no site-packages), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    return files[:max_files] if max_files else files


def module_docstrings(source: str) -> str:
    """Module, class and function docstrings of a Python file, joined as one prose document."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    nodes = [tree] + [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    return "\n\n".join(doc.strip() for doc in map(ast.get_docstring, nodes) if doc)


class SourcesReader(PipelineStep):
    name = "📖 read sources"
    type = "📖 - READER"

    def __init__(self, sources: list[SourceConfig], clean: CleanConfig, skips_dir: str):
        super().__init__()
        self.sources, self.clean, self.skips_dir = sources, clean, skips_dir

    # -- work units ---------------------------------------------------------------------------
    def units(self, world_size: int) -> list[tuple]:
        units = []
        for source in self.sources:
            if source.type == "files":
                units += [(source, "file", str(p)) for p in list_files(Path(source.path))]
            elif source.type == "python_stdlib":
                units += [(source, "stdlib", str(p)) for p in stdlib_files(source.max_files)]
            elif source.type == "tasks":
                units += [
                    (source, "tasks", (start, min(start + TASK_UNIT, source.num_examples)))
                    for start in range(0, source.num_examples, TASK_UNIT)
                ]
            else:  # a datasets dataset is split by node, one unit per rank
                units += [(source, "hf", shard) for shard in range(world_size)]
        return units

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self.skipped: list[dict] = []
        units = self.units(world_size)
        hf_units = [u for u in units if u[1] == "hf"]
        mine = [u for i, u in enumerate(u for u in units if u[1] != "hf") if i % world_size == rank]
        mine += [u for u in hf_units if u[2] == rank]
        try:
            for source, unit_type, unit in mine:
                reader = {
                    "file": self.read_file,
                    "stdlib": self.read_stdlib,
                    "tasks": self.read_tasks,
                    "hf": self.read_hf,
                }[unit_type]
                for doc in reader(source, unit, world_size):
                    if len(doc.text) > self.clean.max_document_chars:
                        self.skip(
                            source,
                            doc.metadata.get("location", doc.id),
                            "absurdly_long",
                            f"{len(doc.text):,} characters > max_document_chars",
                        )
                        continue
                    self.stat_update(f"read_{source.name}")
                    yield doc
        finally:
            Path(self.skips_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.skips_dir) / f"{rank:05d}.json").write_text(json.dumps(self.skipped, indent=1))

    def skip(self, source: SourceConfig, location: str, reason: str, detail: str = "") -> None:
        self.stat_update(f"skipped_{reason}")
        self.skipped.append({"source": source.name, "location": location, "reason": reason, "detail": detail[:200]})

    def document(self, source, text, location, kind, **metadata) -> Document:
        return Document(
            text=text,
            id=f"{source.name}:{location}",
            metadata={
                "source": source.name,
                "kind": kind,
                "location": location,
                "stream": "task" if kind == "task" else "corpus",
                **metadata,
            },
        )

    # -- readers --------------------------------------------------------------------------------
    def read_file(self, source: SourceConfig, path: str, world_size: int):
        file = Path(path)
        suffix = _suffix(file)
        kind = source.kind or ("code" if suffix in CODE_SUFFIXES else "prose")
        if file.stat().st_size == 0:
            self.skip(source, f"{path}:0", "empty_file")
            return
        if suffix in (".jsonl", ".jsonl.gz"):
            yield from self.read_jsonl(source, file, kind)
        elif suffix == ".parquet":
            yield from self.read_parquet(source, file, kind)
        else:
            try:
                text = file.read_bytes().decode("utf-8")
            except UnicodeDecodeError as error:
                line = file.read_bytes()[: error.start].count(b"\n") + 1
                self.skip(source, f"{path}:{line}", "invalid_utf8", str(error))
                return
            if not text.strip():
                self.skip(source, f"{path}:0", "empty_file")
                return
            yield self.document(source, text, f"{path}:1", kind)

    def read_jsonl(self, source, file: Path, kind: str):
        opener = gzip.open if file.name.endswith(".gz") else open
        number = 0
        try:
            with opener(file, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    location = f"{file}:{number}"
                    if not raw.strip():
                        continue
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as error:
                        self.skip(source, location, "invalid_utf8", str(error))
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        self.skip(source, location, "corrupt_json", f"{error.msg} at column {error.colno}")
                        continue
                    text = record.get(source.text_field) if isinstance(record, dict) else None
                    if not isinstance(text, str):
                        self.skip(source, location, "missing_field", f"no string field {source.text_field!r}")
                        continue
                    yield self.document(source, text, location, kind)
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:  # a truncated or damaged .gz: keep what came before
            detail = f"{type(error).__name__}: {error}; the {number} line(s) before it were read"
            self.skip(source, f"{file}:{number + 1}", "corrupt_compressed", detail)

    def read_parquet(self, source, file: Path, kind: str):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(file)
        except Exception as error:  # pyarrow raises several types for a damaged file
            self.skip(source, f"{file}:0", "corrupt_parquet", str(error))
            return
        if source.text_field not in table.column_names:
            self.skip(source, f"{file}:0", "missing_field", f"no column {source.text_field!r}")
            return
        for number, text in enumerate(table.column(source.text_field).to_pylist(), start=1):
            if not isinstance(text, str):
                self.skip(source, f"{file}:{number}", "missing_field", "null or non-string text")
                continue
            yield self.document(source, text, f"{file}:{number}", kind)

    def read_stdlib(self, source, path: str, world_size: int):
        try:
            code = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as error:
            self.skip(source, f"{path}:0", "invalid_utf8", str(error))
            return
        if not code.strip():  # e.g. an empty __init__.py
            self.skip(source, f"{path}:0", "empty_file")
            return
        yield self.document(source, code, f"{path}:1", "code")
        docstrings = module_docstrings(code)
        if docstrings:
            yield self.document(source, docstrings, f"{path}:docstrings", "prose")

    def read_hf(self, source, shard: int, world_size: int):
        import datasets
        from datasets.distributed import split_dataset_by_node

        path = Path(source.path)
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[source.split]
        else:
            dataset = datasets.load_dataset(source.path, source.config, split=source.split, streaming=source.streaming)
        if source.max_documents is not None:
            dataset = (
                dataset.take(source.max_documents)
                if isinstance(dataset, datasets.IterableDataset)
                else dataset.select(range(min(source.max_documents, len(dataset))))
            )
        dataset = split_dataset_by_node(dataset, rank=shard, world_size=world_size)
        kind = source.kind or "prose"
        for number, record in enumerate(dataset, start=1):
            location = f"{source.path}[{shard}/{world_size}]:{number}"
            text = record.get(source.text_field)
            if not isinstance(text, str):
                self.skip(source, location, "missing_field", f"no string field {source.text_field!r}")
                continue
            yield self.document(source, text, location, kind)

    def read_tasks(self, source, span: tuple[int, int], world_size: int):
        from ..tasks import Mixture, get_task

        mixture = Mixture(source.mixture, seed=source.seed)
        for index in range(*span):
            record = mixture.example(index).to_record()
            yield self.document(
                source,
                record["text"],
                f"{source.name}:{index}",
                "task",
                task=record["task"],
                difficulty=record["difficulty"],
                template_id=record["template_id"],
                question=get_task(record["task"]).question_of(record["prompt"]),  # the build's leak check reads it
                error_spans=record["error_spans"],
                marker_spans=record["marker_spans"],
            )
