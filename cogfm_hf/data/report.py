"""What happened to every document of a build: a JSON report and a printed table."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

from ..console import text_table

EXAMPLES_PER_REASON = 3


def _jsonl_records(paths):
    for path in paths:
        with gzip.open(path, "rt") as handle:
            for line in handle:
                yield json.loads(line)


def _stage_stats(work: Path, stage: str) -> list[dict]:
    path = work / "logs" / stage / "stats.json"
    return json.loads(path.read_text()) if path.exists() else []


def build_report(recipe, work: Path, stages: list[str]) -> dict:
    skips = [entry for path in sorted((work / "skips").glob("*.json")) for entry in json.loads(path.read_text())]
    read = Counter()
    for step in _stage_stats(work, "curate"):
        for key, value in step.get("stats", {}).items():
            if key.startswith("read_"):
                read[key[len("read_") :]] += value["total"] if isinstance(value, dict) else value

    removed: dict[str, dict] = {}
    for reason_dir in sorted((work / "removed").glob("*/*")):
        records = list(_jsonl_records(sorted(reason_dir.glob("*.jsonl.gz"))))
        if not records:
            continue
        key = (
            reason_dir.name
            if reason_dir.name == reason_dir.parent.name
            else f"{reason_dir.parent.name}:{reason_dir.name}"
        )
        removed[key] = {
            "documents": len(records),
            "by_source": dict(Counter(r["metadata"].get("source", "?") for r in records)),
            "examples": [
                {
                    "location": r["metadata"].get("location", r.get("id")),
                    "text": r.get("text", "")[:160],
                    **(
                        {"contaminated_by": r["metadata"]["contaminated_by"]}
                        if "contaminated_by" in r["metadata"]
                        else {}
                    ),
                }
                for r in records[:EXAMPLES_PER_REASON]
            ],
        }

    near_clusters = {"clusters": 0, "documents_in_clusters": 0}
    for record in _jsonl_records(sorted((work / "near_deduped").glob("*.jsonl.gz"))):
        size = record["metadata"].get("minhash_cluster_size", 1)
        if size > 1:
            near_clusters["clusters"] += 1
            near_clusters["documents_in_clusters"] += size

    packing = Counter()
    by_source, by_task, docs_by_source = Counter(), Counter(), Counter()
    for path in sorted((work / "packed").glob("stats-*.json")):
        stats = json.loads(path.read_text())
        for key in ("documents", "tokens", "sequences", "padding_tokens", "error_tokens", "chunked_documents"):
            packing[key] += stats[key]
        by_source.update(stats["tokens_by_source"])
        by_task.update(stats["tokens_by_task"])
        docs_by_source.update(stats["documents_by_source"])

    skipped_by_source = defaultdict(Counter)
    for entry in skips:
        skipped_by_source[entry["source"]][entry["reason"]] += 1
    removed_by_source = defaultdict(int)
    for info in removed.values():
        for source, count in info["by_source"].items():
            removed_by_source[source] += count
    sources = {}
    for source in recipe.sources:
        name = source.name
        sources[name] = {
            "type": source.type,
            "documents_read": read[name],
            "skipped": dict(skipped_by_source[name]),
            "removed": removed_by_source[name],
            "documents_out": docs_by_source[name],
            "tokens_out": by_source[name],
            "token_share": by_source[name] / max(1, packing["tokens"]),
        }
    return {
        "stages": stages,
        "sources": sources,
        "skips": skips,
        "removed": removed,
        "near_duplicate_clusters": near_clusters,
        "tokens_by_task": {
            task: {"tokens": n, "share": n / max(1, packing["tokens"])} for task, n in sorted(by_task.items())
        },
        "packing": dict(
            packing,
            seq_len=recipe.pack.seq_len,
            fill=1 - packing["padding_tokens"] / max(1, packing["sequences"] * recipe.pack.seq_len),
        ),
        "totals": {
            "documents_read": sum(read.values()),
            "skipped": len(skips),
            "removed": sum(info["documents"] for info in removed.values()),
            "documents_out": packing["documents"],
            "tokens_out": packing["tokens"],
            "sequences": packing["sequences"],
        },
    }


def print_report(report: dict, max_skips: int = 20) -> None:
    rows = [("source", "read", "skipped", "removed", "docs out", "tokens out", "share")]
    for name, info in report["sources"].items():
        rows.append(
            (
                name,
                f"{info['documents_read']:,}",
                f"{sum(info['skipped'].values()):,}",
                f"{info['removed']:,}",
                f"{info['documents_out']:,}",
                f"{info['tokens_out']:,}",
                f"{info['token_share']:.1%}",
            )
        )
    totals = report["totals"]
    rows.append(
        (
            "total",
            f"{totals['documents_read']:,}",
            f"{totals['skipped']:,}",
            f"{totals['removed']:,}",
            f"{totals['documents_out']:,}",
            f"{totals['tokens_out']:,}",
            "100%",
        )
    )
    print(text_table(rows))
    if report["removed"]:
        print("\nremoved, by reason:")
        removed = sorted(report["removed"].items(), key=lambda kv: -kv[1]["documents"])
        rows = [(reason, f"{info['documents']:,}", repr(info["examples"][0]["text"][:60])) for reason, info in removed]
        print(text_table([("reason", "documents", "example"), *rows]))
    clusters = report["near_duplicate_clusters"]
    print(
        f"\nnear-duplicate clusters: {clusters['clusters']:,} "
        f"(holding {clusters['documents_in_clusters']:,} documents)"
    )
    print(
        "tokens by task: "
        + ", ".join(f"{task} {info['share']:.1%}" for task, info in report["tokens_by_task"].items())
    )
    packing = report["packing"]
    print(
        f"packed: {packing['sequences']:,} sequences of {packing['seq_len']} tokens, {packing['fill']:.1%} filled, "
        f"{packing['error_tokens']:,} error tokens"
    )
    if report["skips"]:
        print(f"\nskipped ({len(report['skips'])}), by file:line:")
        for entry in report["skips"][:max_skips]:
            print(f"  {entry['location']}  {entry['reason']}  {entry['detail']}")
        if len(report["skips"]) > max_skips:
            print(f"  ... {len(report['skips']) - max_skips} more in report.json")
