"""Fixed, versioned test sets for evaluation, written into `eval_tasks/data/`.

Each (task, bucket) gets `per_bucket` examples drawn from held-out templates only, from a seed derived
from (EXPORT_VERSION, task, bucket); files are written byte-for-byte reproducibly (sorted keys, no
timestamps), and `manifest.json` records the version, counts and sha256 of each file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .base import HELD_OUT_FRACTION, seeded_rng

# Bump whenever a generator, a bucket or the held-out split changes: evaluation results name it.
EXPORT_VERSION = "v1"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "eval_tasks" / "data"


def bucket_records(task, bucket: str, per_bucket: int) -> list[dict]:
    kind, overrides = task.buckets[bucket]
    knobs = task.knobs(**{**task.train_knobs, **overrides})
    rng = seeded_rng("export", EXPORT_VERSION, task.name, bucket)
    records = []
    for index in range(per_bucket):
        example = task.sample_split(rng, "heldout", knobs)
        records.append(dict(
            id=f"{task.name}/{bucket}/{index}", task=task.name, bucket=bucket, kind=kind,
            difficulty=example.difficulty, template_id=example.template_id,
            prompt=example.prompt, solution=example.solution, answer=example.answer,
        ))
    return records


def render(tasks: dict, per_bucket: int) -> dict[str, bytes]:
    """File name -> exact bytes, manifest included."""
    files, manifest = {}, {"version": EXPORT_VERSION, "held_out_fraction": HELD_OUT_FRACTION,
                           "per_bucket": per_bucket, "files": {}}
    for task in tasks.values():
        for bucket, (kind, _) in task.buckets.items():
            name = f"{task.name}_{bucket}.jsonl"
            body = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                           for r in bucket_records(task, bucket, per_bucket)).encode()
            files[name] = body
            manifest["files"][name] = {"task": task.name, "bucket": bucket, "kind": kind, "examples": per_bucket,
                                       "sha256": hashlib.sha256(body).hexdigest()}
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return files


def export(out_dir: Path, tasks: dict, per_bucket: int) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in render(tasks, per_bucket).items():
        path = out_dir / name
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_bytes(body)
        temporary.replace(path)  # atomic: an interrupted export never leaves a half-written file
        written.append(path)
    return written


def stale_files(out_dir: Path, tasks: dict, per_bucket: int) -> list[str]:
    """Files in `out_dir` that differ from (or are missing against) what the generators produce now."""
    return [name for name, body in render(tasks, per_bucket).items()
            if not (out_dir / name).exists() or (out_dir / name).read_bytes() != body]
