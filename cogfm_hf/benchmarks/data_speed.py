"""Data-pipeline throughput: near-duplicate detection (documents/s) and tokenise + pack (tokens/s).

    python -m cogfm_hf.benchmarks.data_speed [--examples 20000] [--workers 1] [--rounds 2]

Runs a real build (the standard library plus generated reasoning examples) and reads each stage's
wall time from its report. Baselines, timed in the same process on the same documents: exact
deduplication (content hashing, datatrove's 3 stages) for near-dedup, and bare batch tokenisation
(`tokenizer(texts)`, no offsets, no packing) for tokenise + pack.

Then MinHash signatures alone, and the build's whole near-dedup stage with each (signatures, buckets, clusters, and
the filter that rewrites the corpus), in this process, alternating round by round on the build's exact-deduplicated
corpus: our MinhashSignature against datatrove's own (spaCy word tokenisation, what the build ran before issue #20).
And the near-duplicates each marks, through datatrove's bucket and cluster stages: a different word tokeniser and
n-gram hash change the shingles, so some documents near the threshold change sides. How many is put beside
MinHash's own spread: datatrove's signatures again under another hash seed.
"""

import argparse
import dataclasses
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

from ..data import build, load_recipe
from ..data.pipeline import MinhashSignature, minhash_config, pipelines, run_stage
from ..hardware import describe_cpu

SIGNATURES = {"datatrove (spaCy words)": MinhashDedupSignature, "ours": MinhashSignature}


def signature_seconds(signature_step, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        shingles = signature_step.get_shingles(text)
        if shingles.size:
            signature_step.get_signature(shingles)
    return time.perf_counter() - start


def near_dedup_stage(exact_deduped: Path, scratch: Path, recipe, signatures) -> tuple[float, set]:
    """The build's near-dedup stage on `exact_deduped` (its four steps, laid out by `pipelines` and run by
    `run_stage` as the build runs them, 1 worker), with `signatures(output_folder, config)` as its first step's
    signature step: the stage's seconds and the documents it marks for removal, as (rank, index)."""
    scratch.mkdir()
    (scratch / "exact_deduped").symlink_to(exact_deduped, target_is_directory=True)
    stages = {name: stage for name, stage in pipelines(recipe, scratch).items() if name.startswith("minhash")}
    (reader, ours), tasks = stages["minhash_signatures"]
    stages["minhash_signatures"] = ([reader, signatures(str(ours.output_folder.path), ours.config)], tasks)
    start = time.perf_counter()
    for name, (steps, tasks) in stages.items():
        run_stage(name, steps, tasks, 1, scratch)
    seconds = time.perf_counter() - start
    marked = {
        (int(path.name.split(".")[0]), int(index))
        for path in (scratch / "minhash" / "remove").glob("*.remove")
        for index in np.fromfile(path, dtype="<u4")
    }
    return seconds, marked


def print_comparison(what: str, seconds: dict[str, list[float]], documents: int, characters: int) -> None:
    """A table of each arm's median throughput, and the median per-round ratio of the first arm's time to the
    second's."""
    print(f"| {what} | seconds | docs/s | MB/s |")
    print("|---|---|---|---|")
    for name, rounds in seconds.items():
        median = statistics.median(rounds)
        print(f"| {name} | {median:.2f} | {documents / median:,.0f} | {characters / median / 1e6:.2f} |")
    ratios = sorted(theirs / ours for theirs, ours in zip(*seconds.values()))
    print(f"speed-up: {statistics.median(ratios):.2f}x (min {ratios[0]:.2f}, max {ratios[-1]:.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=20000, help="generated reasoning examples")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the MinHash comparison")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        recipe = load_recipe(
            {
                "output_dir": str(Path(scratch) / "out"),
                "workers": args.workers,
                "sources": [
                    {"name": "stdlib", "type": "python_stdlib"},
                    {
                        "name": "reasoning",
                        "type": "tasks",
                        "num_examples": args.examples,
                        "mixture": [{"task": t, "retry_p": 0.2} for t in ("chains", "arithmetic", "logic", "code")],
                    },
                ],
                "tokenizer": {"vocab_size": 4096, "train_chars": 2_000_000},
                "pack": {"seq_len": 512},
            }
        )
        output = build(recipe, keep_work=True)
        report = json.loads((output / "report.json").read_text())
        seconds = report["stage_seconds"]
        work = next(Path(scratch).glob(".out.build-*"))
        near_input = [
            json.loads(line)["text"]
            for p in (work / "exact_deduped").glob("*.jsonl.gz")
            for line in gzip.open(p, "rt")
        ]
        corpus_docs, corpus_chars = len(near_input), sum(map(len, near_input))
        curated_docs = sum(1 for p in (work / "curated" / "corpus").glob("*.jsonl.gz") for _ in gzip.open(p, "rt"))
        near = sum(v for k, v in seconds.items() if k.startswith("minhash"))
        exact = sum(v for k, v in seconds.items() if k.startswith("exact"))
        tokens = report["packing"]["tokens"]

        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(output / "tokenizer")
        texts = [
            json.loads(line)["text"]
            for p in sorted((work / "curated" / "task").glob("*.jsonl.gz"))
            for line in gzip.open(p, "rt")
        ]
        texts += [
            json.loads(line)["text"]
            for p in sorted((work / "near_deduped").glob("*.jsonl.gz"))
            for line in gzip.open(p, "rt")
        ]
        start = time.perf_counter()
        for i in range(0, len(texts), 256):
            tokenizer(texts[i : i + 256], add_special_tokens=False)
        bare = time.perf_counter() - start

        config = minhash_config(recipe)
        steps = {name: cls(str(Path(scratch) / "unused"), config=config) for name, cls in SIGNATURES.items()}
        signature_step_seconds = {name: [] for name in SIGNATURES}
        stage_seconds = {name: [] for name in SIGNATURES}
        marked = {}
        for round_index in range(args.rounds):
            for index, name in enumerate(SIGNATURES if round_index % 2 == 0 else reversed(SIGNATURES)):
                signature_step_seconds[name].append(signature_seconds(steps[name], near_input))
                elapsed, marked[name] = near_dedup_stage(
                    work / "exact_deduped", Path(scratch) / f"near-{round_index}-{index}", recipe, SIGNATURES[name]
                )
                stage_seconds[name].append(elapsed)

        def reseeded(output_folder, config):
            return MinhashDedupSignature(output_folder, config=dataclasses.replace(config, seed=config.seed + 1))

        _, marked["datatrove, hash seed + 1"] = near_dedup_stage(
            work / "exact_deduped", Path(scratch) / "near-seed", recipe, reseeded
        )

    print(
        f"\n{args.workers} worker(s); {curated_docs:,} corpus documents into exact dedup, {corpus_docs:,} "
        f"({corpus_chars / corpus_docs:,.0f} characters on average) into near dedup; "
        f"{tokens:,} tokens packed (seq 512); CPU: {describe_cpu()}\n"
    )
    print("| step | throughput | baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| near-dedup (MinHash, 4 stages) | {corpus_docs / near:,.0f} docs/s ({corpus_chars / near / 1e6:.2f} MB/s) "
        f"| exact dedup "
        f"{curated_docs / exact:,.0f} docs/s | {(corpus_docs / near) / (curated_docs / exact):.2f} |"
    )
    print(
        f"| tokenise + pack | {tokens / seconds['pack']:,.0f} tokens/s | bare tokenisation "
        f"{tokens / bare:,.0f} tokens/s | {bare / seconds['pack']:.2f} |"
    )
    print("\nstage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))

    print(f"\nMinHash signatures (shingles + min-hashes) of the same {corpus_docs:,} documents, {args.rounds} rounds:")
    print_comparison("signatures", signature_step_seconds, corpus_docs, corpus_chars)
    print(f"\nThe near-dedup stage as the build runs it (4 steps, 1 worker), {args.rounds} rounds:")
    print_comparison("near-dedup stage with signatures by", stage_seconds, corpus_docs, corpus_chars)
    reference = marked["datatrove (spaCy words)"]
    print("\n| near-duplicates marked by | count | also marked by datatrove (spaCy, seed 1) | Jaccard |")
    print("|---|---|---|---|")
    for name, documents in marked.items():
        jaccard = len(documents & reference) / max(1, len(documents | reference))
        print(f"| {name} | {len(documents)} | {len(documents & reference)} | {jaccard:.3f} |")


if __name__ == "__main__":
    main()
