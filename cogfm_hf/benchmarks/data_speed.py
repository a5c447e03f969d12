"""Data-pipeline throughput: near-duplicate detection (documents/s) and tokenise + pack (tokens/s).

    python -m cogfm_hf.benchmarks.data_speed [--examples 20000] [--workers 1]

Runs a real build (the standard library plus generated reasoning examples) and reads each stage's
wall time from its report. Baselines, timed in the same process on the same documents: exact
deduplication (content hashing, datatrove's 3 stages) for near-dedup, and bare batch tokenisation
(`tokenizer(texts)`, no offsets, no packing) for tokenise + pack.
"""

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

from ..data import build, load_recipe
from ..hardware import describe_cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=20000, help="generated reasoning examples")
    parser.add_argument("--workers", type=int, default=1)
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


if __name__ == "__main__":
    main()
