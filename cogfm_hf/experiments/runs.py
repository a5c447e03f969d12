"""One run of an experiment: a training-recipe variant trained in its own process, then scored item by item.

Shared by every experiment runner (the ablation, the scaling ladder). A run directory is complete when
its record (`RUN_DONE`) exists: the record is written last and atomically, so an interrupted run is started again
from scratch and a finished one is never redone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..data.recipe import DataRecipe
from ..tasks import BACK
from ..tasks.mixture import generator_digest
from ..training.evaluation import run_lm_eval, scores

RUN_DONE = "ablation_eval.json"  # the record's name predates the other experiments; kept so old run dirs resume
RUN_RECIPE = "ablation_recipe.yaml"
RUN_LOG = "train.log"  # the Trainer's progress bar and logs


def data_key(data: dict) -> str:
    """Names a data section by its content (without its output_dir) and its task generators' code, so variants
    with the same data share a build and a generator changed under the same task name gets a new one."""
    tasks = sorted(
        {c["task"] for s in data.get("sources", []) if s.get("type") == "tasks" for c in s.get("mixture", [])}
    )
    content = {k: v for k, v in data.items() if k != "output_dir"}
    blob = json.dumps(
        {**content, "generators": generator_digest(tasks) if tasks else None}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def shared_tokenizer(data: dict, output_dir: Path, tokenizer_dir: Path) -> bool:
    """Train one tokenizer on `data` (a data section) into `tokenizer_dir`, so every run of an experiment tokenises
    alike; False when it is there already. Each run then builds its own data with it."""
    if (tokenizer_dir / "tokenizer.json").is_file():
        return False
    from ..data import build

    built = Path(build(DataRecipe.from_dict({**data, "output_dir": str(output_dir / "tokenizer_build")})))
    partial = tokenizer_dir.with_name(tokenizer_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(built / "tokenizer", partial)
    partial.rename(tokenizer_dir)  # atomic: a tokenizer directory is always complete
    shutil.rmtree(built)
    return True


def train_run(recipe: dict, run_dir: Path) -> float:
    """Pretrain `recipe` (a training-recipe mapping) in a fresh process (`python -m cogfm_hf.training pretrain`),
    its output in `run_dir`; returns the seconds it took. A failed run raises with the tail of its log. The process
    runs in the caller's directory, so relative paths in the recipe mean what they mean to the caller."""
    recipe_path, log_path = run_dir / RUN_RECIPE, run_dir / RUN_LOG
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    start = time.perf_counter()
    with log_path.open("w") as log:
        command = [sys.executable, "-m", "cogfm_hf.training", "pretrain", str(recipe_path)]
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"run {run_dir.name} failed (exit {result.returncode}); its log: {log_path}\n{tail}")
    return time.perf_counter() - start


def evaluate_checkpoint(
    checkpoint: Path, test_tasks: list[str], dev_tasks: list[str], limit: int | None, batch_size: int
) -> dict:
    """lm-eval on a saved checkpoint, loaded the way the `lm_eval --model hf` CLI loads it. Per test and dev item:
    correct or not, and whether the generated text holds the BACK marker (in the test set's order); per
    self-correction task: its scores."""
    results = run_lm_eval(checkpoint, test_tasks + dev_tasks, limit=limit, batch_size=batch_size)
    out: dict = {"test": {}, "dev": {}, "self_correction": {}}
    for task, samples in results["samples"].items():
        samples = sorted(samples, key=lambda s: s["doc_id"])
        doc = samples[0]["doc"]
        if doc.get("bucket") == "self_correction":
            out["self_correction"][task] = {
                key.split("/", 1)[1]: value for key, value in scores(results).items() if key.startswith(f"{task}/")
            }
            continue
        out["dev" if task in dev_tasks else "test"][task] = {
            "task": doc["task"],
            "difficulty": doc["difficulty"],
            "correct": [int(s["exact_match"]) for s in samples],
            "marker": [int(BACK in s["resps"][0][0]) for s in samples],
        }
    return out


def learning_curve(log_history: list[dict]) -> list[dict]:
    """The in-loop evaluations of a run: tokens seen and each task's exact match."""
    curve = []
    for entry in log_history:
        accuracies = {
            k.split("/")[1]: v for k, v in entry.items() if k.startswith("eval/") and k.endswith("/exact_match")
        }
        if accuracies:
            step, tokens = entry.get("step", 0), entry.get("num_input_tokens_seen", 0)
            curve.append({"step": step, "tokens": tokens, "exact_match": accuracies})
    return curve


def loss_curve(log_history: list[dict]) -> list[dict]:
    """The training loss of each logging window, with the tokens seen by then."""
    return [
        {"step": entry["step"], "tokens": entry.get("num_input_tokens_seen", 0), "loss": entry["loss"]}
        for entry in log_history
        if "loss" in entry and "step" in entry
    ]


def write_record(run_dir: Path, record: dict) -> None:
    """Atomically: a run directory holding its record is complete."""
    partial = run_dir / (RUN_DONE + ".partial")
    partial.write_text(json.dumps(record))
    partial.replace(run_dir / RUN_DONE)


def read_record(run_dir: Path) -> dict | None:
    done = run_dir / RUN_DONE
    return json.loads(done.read_text()) if done.is_file() else None


def completed_records(runs_dir: Path) -> list[dict]:
    records = []
    for path in sorted(runs_dir.glob(f"*/{RUN_DONE}")):
        record = json.loads(path.read_text())
        state = path.parent / "trainer_state.json"
        if "loss_curve" not in record and state.is_file():  # recorded before records kept the loss
            record["loss_curve"] = loss_curve(json.loads(state.read_text())["log_history"])
        summary = path.parent / "training_summary.json"
        if "precision" not in record and summary.is_file():  # recorded before records named the machine
            record.update({k: v for k, v in json.loads(summary.read_text()).items() if k in ("precision", "device")})
        records.append(record)
    return records
