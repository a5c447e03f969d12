"""The evaluation the training loop runs, timed: today's fast path against lm-eval's plain `hf` model.

    python -m cogfm_hf.benchmarks.eval_speed --checkpoint outputs/cogfm-tiny      # after `make train`
    python -m cogfm_hf.benchmarks.eval_speed --checkpoint DIR --tasks cogfm_chains_id --limit 50 --rounds 3

Both arms evaluate the same checkpoint on the same items in one process, alternating (plain, fast, fast, plain,
...), so background load hits both alike:
  plain   lm-eval's HFLM, as `lm_eval --model hf` runs it (run_lm_eval with stop_at_answer_line=False), plus the
          TaskManager indexing lm-eval's own tasks that run_lm_eval built at every evaluation before (~20 s)
  fast    run_lm_eval as the training loop calls it: AnswerLineHFLM (each generation stops at its complete answer
          line) and a TaskManager of our tasks only, made once per process
Reported: seconds per evaluation (median over rounds), the ratio plain / fast, and whether every score agrees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ..hardware import describe_cpu
from ..paths import EVAL_TASKS_DIR
from ..training.evaluation import run_lm_eval, scores


def evaluate(arm: str, checkpoint: str, tasks: list[str], limit: int | None, batch_size: int) -> tuple[float, dict]:
    """Seconds and scores of one evaluation by `arm`."""
    start = time.perf_counter()
    if arm == "plain":
        from lm_eval.tasks import TaskManager

        TaskManager(include_path=str(EVAL_TASKS_DIR))  # the index with lm-eval's own tasks, built at every call before
    results = run_lm_eval(
        checkpoint, tasks, limit=limit, batch_size=batch_size, device="cpu", stop_at_answer_line=arm == "fast"
    )
    return time.perf_counter() - start, scores(results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/cogfm-tiny")
    parser.add_argument("--tasks", nargs="*", default=["cogfm_all"])
    parser.add_argument("--limit", type=int, default=20, help="items per task (the in-loop default)")
    parser.add_argument("--batch-size", type=int, default=96, help="the in-loop default (eval.batch_size)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    seconds = {"plain": [], "fast": []}
    results = {}
    for round_index in range(args.rounds):
        for arm in ("plain", "fast") if round_index % 2 == 0 else ("fast", "plain"):
            elapsed, results[arm] = evaluate(arm, args.checkpoint, args.tasks, args.limit, args.batch_size)
            seconds[arm].append(elapsed)
            print(f"round {round_index}: {arm} {elapsed:.1f} s", flush=True)
    differ = sorted(
        key
        for key in results["plain"].keys() | results["fast"].keys()
        if results["plain"].get(key) != results["fast"].get(key)
        and not (results["plain"].get(key) != results["plain"].get(key))  # NaN rates agree with NaN
    )
    ratios = sorted(plain / fast for plain, fast in zip(seconds["plain"], seconds["fast"]))
    summary = {
        "checkpoint": args.checkpoint,
        "tasks": args.tasks,
        "limit": args.limit,
        "seconds": {arm: statistics.median(s) for arm, s in seconds.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "scores_compared": len(results["plain"]),
        "scores_differing": differ,
    }
    print(json.dumps(summary, indent=2))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU: {describe_cpu()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
