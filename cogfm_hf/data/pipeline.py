"""The build: raw sources -> curated, deduplicated, decontaminated, tokenised and packed shards.

Stages run as datatrove pipelines (LocalPipelineExecutor here; the same step lists run under datatrove's
Slurm or Ray executors, see `pipelines`). Everything is written into a work directory named after the
recipe's fingerprint beside the output; only a finished build is renamed to `output_dir`, so an
interrupted build leaves the output untouched and, run again, resumes (datatrove skips completed
tasks). Re-running a finished build is a no-op.

Output:
    output_dir/tokenizer/      AutoTokenizer.from_pretrained(...) loads it offline
    output_dir/packed/         shard-NNNNN/ (datasets Arrow) per rank, see cogfm_hf.data.pack
    output_dir/report.json     what happened to every document (also printed as a table)
    output_dir/manifest.json   recipe, fingerprint, counts, sha256 of every file
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import random
import shutil
import sys
import time
import unicodedata
from pathlib import Path

import fsspec.compression
import numpy as np
import xxhash
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig, simplify_text
from tqdm import tqdm

from ..config import RecipeError
from ..paths import EVAL_DATA_DIR
from .filters import (
    HELD_OUT_QUESTION,
    PROSE_FILTERS,
    CodeQualityFilter,
    Decontaminate,
    KindFilter,
    LengthFilter,
    TextNormalizer,
)
from .pack import PackTokens
from .recipe import DataRecipe
from .report import build_report, print_report
from .sources import SourcesReader
from .tokenizer import train_tokenizer, wrap

MANIFEST = "manifest.json"
# The corpus files the build's stages hand on (curated, exact- and near-deduplicated) are gzip at level 1: gzip's
# default, 9, took 0.95 s for the built-in corpus's 10.7 MB at each rewrite, level 1 0.10 s for a file 27% larger.
# They are read back as any .gz (the format is the same), and the packed output does not change.
WORK_COMPRESSION = "gzip-level-1"
fsspec.compression.register_compression(
    WORK_COMPRESSION,
    lambda file, mode="rb", **kwargs: gzip.GzipFile(fileobj=file, mode=mode, compresslevel=1, **kwargs),
    extensions=[],
    force=True,  # a module imported again (datatrove's workers) registers the same codec
)


class OptionalJsonlReader(JsonlReader):
    """A JsonlReader for which a folder without files means "nothing here" (datatrove's raises): a recipe
    may have no corpus or no task source."""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if self.data_folder.list_files(recursive=self.recursive, glob_pattern=self.glob_pattern):
            yield from super().run(data, rank, world_size)
        elif data:
            yield from data


class MinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signatures, computed ~11x faster (docs/benchmarks.md):
    - words: datatrove's simplified text (lowercased, punctuation turned into spaces, numbers normalised) has its
      words between spaces, so they are split there rather than by spaCy, datatrove's English word tokeniser, which
      ran at ~0.5 MB/s on the built-in corpus (this changes the shingles: the near-duplicates found are compared in
      the benchmark);
    - shingles: each distinct word is hashed once (xxhash64) and an n-gram's hash combines its words' hashes in
      numpy (a polynomial over the n words, then splitmix64's finaliser), rather than hashing every joined n-gram;
    - simplification (`simplify_words`) and min-hashes (`get_signature`) give datatrove's exact values, faster."""

    MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so the polynomial loses no bits

    def get_shingles(self, text: str) -> np.ndarray:
        words = simplify_words(text, self.config.norm_config).split()
        count = len(words) - self.config.n_grams + 1
        if count < 1:
            return np.empty((0, 1), dtype=np.uint64)
        word_hash = {word: xxhash.xxh64_intdigest(word) for word in set(words)}
        hashes = np.fromiter((word_hash[word] for word in words), dtype=np.uint64, count=len(words))
        shingles = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
            for offset in range(self.config.n_grams):
                shingles = shingles * self.MULTIPLIER + hashes[offset : offset + count]
            shingles ^= shingles >> np.uint64(31)
            shingles *= np.uint64(0xBF58476D1CE4E5B9)
            shingles ^= shingles >> np.uint64(29)
        return shingles.reshape(-1, 1)

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        """datatrove's min over `(shingles * a + b) % (2**61 - 1)` (products wrapping modulo 2**64, as in numpy),
        with the remainder taken as for any Mersenne prime, x mod (2**k - 1) = (x & (2**k - 1)) + (x >> k), less
        the prime once if that reaches it (a numpy uint64 `%` divides), over blocks of shingles whose products stay
        in cache: 0.73 -> 0.54 s for the built-in corpus's 1.2 M shingles."""
        a, b = self.parameters
        minimum = None
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), SHINGLES_PER_BLOCK):
                products = shingles[start : start + SHINGLES_PER_BLOCK] * a + b
                products = (products & MERSENNE_61) + (products >> np.uint64(61))
                products -= MERSENNE_61 * (products >= MERSENNE_61)
                if self.config.hash_config.precision == 32:
                    products &= np.uint64(self.config.hash_config.max)
                block_minimum = products.min(axis=0)
                minimum = block_minimum if minimum is None else np.minimum(minimum, block_minimum)
        minimum = minimum.astype(self.config.hash_config.np_dtype)
        return [bucket.tolist() for bucket in np.split(minimum, self.config.num_buckets)]


SHINGLES_PER_BLOCK = 256  # x ~110 hashes x 8 bytes: ~225 KB of products, within a core's L2
MERSENNE_61 = np.uint64((1 << 61) - 1)  # datatrove's `_mersenne_prime`


@functools.cache
def _combining_marks() -> dict[int, None]:
    """Every code point of Unicode category Mn, mapped to deletion (a str.translate table)."""
    return {point: None for point in range(sys.maxunicode + 1) if unicodedata.category(chr(point)) == "Mn"}


def simplify_words(text: str, config: TextNormConfig) -> str:
    """datatrove's `simplify_text`, the same string: its last step, dropping diacritics, tests every character of
    the NFD form in Python (~60% of the signature's time on the built-in corpus); here the marks are deleted by one
    `str.translate`, and ASCII text, which has none, skips the step."""
    if not config.norm_unicode_diacritics:
        return simplify_text(text, config)
    text = simplify_text(text, dataclasses.replace(config, norm_unicode_diacritics=False))
    if not text.isascii():
        text = unicodedata.normalize("NFD", text).translate(_combining_marks()).strip()
    return text


def document_text(doc) -> str:
    """What exact deduplication compares (datatrove reads the return annotation to pick the hash input)."""
    return doc.text


def lsh_bands(threshold: float, num_hashes: int) -> tuple[int, int]:
    """(buckets, hashes per bucket) whose LSH S-curve midpoint (1/b)^(1/r) is closest to `threshold`."""
    candidates = [(b, num_hashes // b) for b in range(1, num_hashes + 1) if num_hashes // b >= 1]
    return min(candidates, key=lambda br: abs((1 / br[0]) ** (1 / br[1]) - threshold))


def minhash_config(recipe: DataRecipe) -> MinhashConfig:
    buckets, per_bucket = lsh_bands(recipe.dedup.threshold, recipe.dedup.num_hashes)
    return MinhashConfig(
        n_grams=recipe.dedup.ngram,
        num_buckets=buckets,
        hashes_per_bucket=per_bucket,
        hash_config=HashConfig(precision=64),
    )


def _removed_writer(work: Path, step: str) -> JsonlWriter:
    # Dropped documents go to removed/<step>/<reason>/ so the report can show examples of each reason.
    return JsonlWriter(str(work / "removed" / step), output_filename="${filter_reason}/${rank}.jsonl.gz")


def corpus_dir(recipe: DataRecipe, work: Path) -> Path:
    """Where the corpus (non-task) documents are after the last enabled deduplication stage."""
    if recipe.dedup.near:
        return work / "near_deduped"
    return work / "exact_deduped" if recipe.dedup.exact else work / "curated" / "corpus"


def pipelines(recipe: DataRecipe, work: Path) -> dict[str, tuple[list, int]]:
    """Every stage's datatrove step list and its task count, in run order. Any datatrove executor runs these."""
    tasks = recipe.workers
    eval_dir = recipe.decontamination.eval_dir or str(EVAL_DATA_DIR)
    curate = [
        SourcesReader(recipe.sources, recipe.clean, str(work / "skips")),
        TextNormalizer(recipe.clean.normalization),
        LengthFilter(recipe.clean.min_chars, recipe.clean.max_chars, exclusion_writer=_removed_writer(work, "length")),
    ]
    # Before quality filters, so a leak is reported as one whatever else it is; the question check of task documents
    # runs even where the n-gram test is turned off.
    curate.append(
        Decontaminate(
            eval_dir,
            recipe.decontamination.ngram if recipe.decontamination.enabled else None,
            exclusion_writer=_removed_writer(work, "decontamination"),
        )
    )
    for name, kwargs in (recipe.filters.prose or {}).items():
        if kwargs is not None:
            curate.append(
                KindFilter(PROSE_FILTERS[name](**kwargs), "prose", name, exclusion_writer=_removed_writer(work, name))
            )
    if recipe.filters.code is not None:
        curate.append(CodeQualityFilter(**recipe.filters.code, exclusion_writer=_removed_writer(work, "code")))
    # Generated task examples skip deduplication (identical easy problems are part of the distribution).
    curate.append(
        JsonlWriter(str(work / "curated"), output_filename="${stream}/${rank}.jsonl.gz", compression=WORK_COMPRESSION)
    )
    stages = {"curate": (curate, tasks)}

    # Deduplication follows datatrove's staged pattern: signatures, matching, then a filter pass that
    # re-reads the same per-rank files and writes the survivors on.
    def dedup_filter(source: str, step_class, reason: str, output: str, **kwargs) -> list:
        removed = JsonlWriter(str(work / "removed" / reason / reason))
        return [
            OptionalJsonlReader(source),
            step_class(exclusion_writer=removed, **kwargs),
            JsonlWriter(str(work / output), output_filename="${rank}.jsonl.gz", compression=WORK_COMPRESSION),
        ]

    corpus = str(work / "curated" / "corpus")
    if recipe.dedup.exact:
        exact, sigs, dups = (
            ExactDedupConfig(content_getter=document_text),
            str(work / "exact" / "sigs"),
            str(work / "exact" / "dups"),
        )
        stages["exact_signatures"] = (
            [OptionalJsonlReader(corpus), ExactDedupSignature(output_folder=sigs, config=exact)],
            tasks,
        )
        stages["exact_find"] = ([ExactFindDedups(data_folder=sigs, output_folder=dups, config=exact)], 1)
        stages["exact_filter"] = (
            dedup_filter(corpus, ExactDedupFilter, "exact_duplicate", "exact_deduped", data_folder=dups, config=exact),
            tasks,
        )
        corpus = str(work / "exact_deduped")
    if recipe.dedup.near:
        config = minhash_config(recipe)
        sigs, buckets, remove = (str(work / "minhash" / name) for name in ("sigs", "buckets", "remove"))
        stages["minhash_signatures"] = (
            [OptionalJsonlReader(corpus), MinhashSignature(output_folder=sigs, config=config)],
            tasks,
        )
        stages["minhash_buckets"] = (
            [MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=config)],
            config.num_buckets,
        )
        stages["minhash_cluster"] = (
            [MinhashDedupCluster(input_folder=buckets, output_folder=remove, config=config, save_cluster_size=True)],
            1,
        )
        stages["minhash_filter"] = (
            dedup_filter(
                corpus,
                MinhashDedupFilter,
                "near_duplicate",
                "near_deduped",
                input_folder=remove,
                load_cluster_sizes=True,
            ),
            tasks,
        )
    stages["tokenizer"] = ([TrainTokenizer(recipe, work)], 1)
    readers = [OptionalJsonlReader(str(corpus_dir(recipe, work))), OptionalJsonlReader(str(work / "curated" / "task"))]
    stages["pack"] = (
        readers
        + [
            PackTokens(
                str(work / "tokenizer"), str(work / "packed"), recipe.pack.seq_len, recipe.pack.group_by_difficulty
            )
        ],
        tasks,
    )
    return stages


def run_stage(name: str, steps: list, tasks: int, workers: int, work: Path) -> None:
    LocalPipelineExecutor(
        pipeline=steps,
        tasks=tasks,
        workers=min(tasks, workers),
        logging_dir=str(work / "logs" / name),
        skip_completed=True,
    ).run()


class TrainTokenizer(PipelineStep):
    """Trains (or copies, when the recipe names one) the tokenizer: a one-task stage between dedup and packing."""

    name = "🔤 train tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, recipe: DataRecipe, work: Path):
        super().__init__()
        self.recipe, self.work = recipe, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        prepare_tokenizer(self.recipe, self.work, corpus_dir(self.recipe, self.work))
        return
        yield


def tokenizer_texts(recipe: DataRecipe, work: Path, corpus: Path):
    """A sample of the cleaned corpus and task examples (~train_chars characters), spread over all files."""
    files = sorted(corpus.glob("*.jsonl.gz")) + sorted((work / "curated" / "task").glob("*.jsonl.gz"))
    import gzip

    budget = recipe.tokenizer.train_chars
    handles = [gzip.open(f, "rt") for f in files]
    try:
        with tqdm(total=budget, desc="tokenizer sample", unit="char", unit_scale=True) as progress:
            while handles and budget > 0:
                for handle in list(handles):
                    line = handle.readline()
                    if not line:
                        handles.remove(handle)
                        continue
                    text = json.loads(line)["text"]
                    budget -= len(text)
                    progress.update(len(text))
                    yield text
    finally:
        for handle in handles:
            handle.close()


def prepare_tokenizer(recipe: DataRecipe, work: Path, corpus: Path) -> None:
    target = work / "tokenizer"
    if (target / "tokenizer.json").exists():
        return
    if recipe.tokenizer.path:
        from tokenizers import Tokenizer

        tokenizer = wrap(Tokenizer.from_file(str(Path(recipe.tokenizer.path) / "tokenizer.json")))
    else:
        tokenizer = train_tokenizer(
            tokenizer_texts(recipe, work, corpus), recipe.tokenizer.vocab_size, recipe.tokenizer.min_frequency
        )
    partial = work / "tokenizer.partial"
    tokenizer.save_pretrained(str(partial))
    partial.replace(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def work_dir(recipe: DataRecipe) -> Path:
    """Where a build of this recipe keeps its intermediate files (resumable; removed after success)."""
    output = Path(recipe.output_dir).resolve()
    return output.parent / f".{output.name}.build-{recipe.fingerprint()[:12]}"


def _remove_leftovers(output: Path, recipe: DataRecipe) -> None:
    """What a build killed while cleaning up left beside `output`: an old build swapped out by --overwrite and not
    yet deleted, or the work directory of a build that was already published. (The work directory of a build
    that never finished is kept: running the same recipe again resumes it.)"""
    leftovers = list(output.parent.glob(f".{output.name}.old-*"))
    work = work_dir(recipe)
    if work.exists() and is_built(output, recipe.fingerprint()):
        leftovers.append(work)
    for leftover in leftovers:
        print(f"removing {leftover.name}, left by an interrupted clean-up", flush=True)
        shutil.rmtree(leftover, ignore_errors=True)


def is_built(output: Path, fingerprint: str) -> bool:
    manifest = output / MANIFEST
    return manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") == fingerprint


class EmptyBuildError(RecipeError):
    """The sources gave no document to train on; nothing was published."""

    def __init__(self, report: dict, work: Path):
        per_source = []
        for name, info in report["sources"].items():
            skips = ", ".join(f"{reason} x{count}" for reason, count in info["skipped"].items()) or "none"
            per_source.append(f"{name}: {info['documents_read']} read, skipped {skips}, {info['removed']} removed")
        super().__init__(
            f"the build produced no training data ({'; '.join(per_source) or 'no sources'}); each skip is listed "
            f"by file:line in {work / 'skips'}. Check the sources' paths and formats",
            "data.sources",
        )


class HeldOutQuestionError(RecipeError):
    """A generated training document asks a test item's question; nothing was published."""


def check_no_held_out_questions(work: Path) -> None:
    """Refuses the build when curation removed any task document for asking a test item's question (it would mean a
    generator's held-out split leaks), naming the first few and where all of them are."""
    folder = work / "removed" / "decontamination" / HELD_OUT_QUESTION
    leaks = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            leaks += [json.loads(line) for line in handle]
    if leaks:
        shown = "; ".join(f"{leak['id']} asks {leak['metadata']['contaminated_by']}" for leak in leaks[:3])
        raise HeldOutQuestionError(
            f"{len(leaks)} generated training document(s) ask the question of a held-out test item ({shown}); all "
            f"are in {folder}. The task's held-out split leaks: fix its generator (or the test sets), then rebuild",
            "data.sources",
        )


def build(recipe: DataRecipe, overwrite: bool = False, keep_work: bool = False) -> Path:
    output = Path(recipe.output_dir).resolve()
    fingerprint = recipe.fingerprint()
    if output.exists() and not output.is_dir():
        raise RecipeError(f"{output} is a file, not a build directory; choose another output_dir", "data.output_dir")
    _remove_leftovers(output, recipe)
    if is_built(output, fingerprint):
        print(f"{output}: already built from this recipe (fingerprint {fingerprint[:12]}); nothing to do.")
        return output
    if output.exists() and not overwrite:
        raise RecipeError(
            f"{output} exists and was built from a different recipe; pass --overwrite (python -m cogfm_hf.data "
            "build) to replace it, or choose another output_dir",
            "data.output_dir",
        )
    work = work_dir(recipe)
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))

    stages = pipelines(recipe, work)
    # A recipe may have no corpus or no task source; readers treat an empty folder as "nothing here".
    for folder in ("curated/corpus", "curated/task", "exact_deduped", "near_deduped"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    seconds = {}
    for name, (steps, tasks) in stages.items():
        if name.startswith(("exact", "minhash")) and not any((work / "curated" / "corpus").iterdir()):
            print(f"== stage {name}: skipped, the recipe produced no corpus documents")
            continue
        start = time.perf_counter()
        print(f"== stage {name} ({tasks} task{'s' * (tasks > 1)})", flush=True)
        run_stage(name, steps, tasks, recipe.workers, work)
        seconds[name] = time.perf_counter() - start
        if name == "curate":
            check_no_held_out_questions(work)

    report = build_report(recipe, work, list(stages))
    if not report["totals"]["sequences"]:
        raise EmptyBuildError(report, work)
    final = work / "final"
    if final.exists():
        shutil.rmtree(final)
    final.mkdir()
    shutil.copytree(work / "tokenizer", final / "tokenizer")
    shutil.copytree(work / "packed", final / "packed")
    report["stage_seconds"] = seconds  # this run's; a resumed build counts only what it ran
    (final / "report.json").write_text(json.dumps(report, indent=2))
    files = sorted(p for p in final.rglob("*") if p.is_file())
    manifest = {
        "fingerprint": fingerprint,
        "recipe": recipe.to_dict(),
        "counts": report["totals"],
        "files": {str(p.relative_to(final)): _sha256(p) for p in files},
    }
    (final / MANIFEST).write_text(json.dumps(manifest, indent=2))

    if output.exists():  # --overwrite: swap the old build out only once the new one is complete
        trash = output.parent / f".{output.name}.old-{random.randrange(1 << 30):08x}"
        output.replace(trash)
        final.replace(output)
        shutil.rmtree(trash)
    else:
        final.replace(output)
    if not keep_work:
        shutil.rmtree(work)
    print_report(report)
    print(f"\nbuilt {output}")
    return output
