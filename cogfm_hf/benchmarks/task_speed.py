"""Examples per second of each reasoning generator (training knobs), clean and with retry data.

    python -m cogfm_hf.benchmarks.task_speed [--seconds 3]

One process, one core. Generation must never be the bottleneck of training: compare the characters/s
here with what a training step consumes (tokens/s from `model_speed` times ~1-3 characters per token).
"""

import argparse
import random
import time

from ..hardware import describe_cpu
from ..tasks import TASKS, Mixture, add_retries


def rate(make_example, seconds: float) -> tuple[float, float]:
    """(examples/s, characters/s) over at least `seconds`."""
    count = chars = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            chars += len(make_example().text)
            count += 1
    return count / elapsed, chars / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(f"CPU: {describe_cpu()}\n")
    print("| generator | examples/s | chars/s | examples/s with retry p=0.3 |")
    print("|---|---|---|---|")
    for name, task in TASKS.items():
        stream = task.generate(0, **task.train_knobs)
        clean = rate(lambda: next(stream), args.seconds)
        rng = random.Random(0)
        retried = rate(lambda: add_retries(next(stream), task, 0.3, rng), args.seconds)
        print(f"| {name} | {clean[0]:,.0f} | {clean[1]:,.0f} | {retried[0]:,.0f} |", flush=True)
    mixture = Mixture([{"task": name, "retry_p": 0.3} for name in TASKS], seed=0)
    counter = iter(range(10**12))
    mixed = rate(lambda: mixture.example(next(counter)), args.seconds)
    print(f"| mixture of all four, p=0.3 | {mixed[0]:,.0f} | {mixed[1]:,.0f} | (included) |")


if __name__ == "__main__":
    main()
