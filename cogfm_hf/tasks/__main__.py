"""python -m cogfm_hf.tasks export [--out DIR] [--per-set N] [--check]
python -m cogfm_hf.tasks sample TASK [--n 3] [--seed 0] [--retry-p 0.3] [--retry-variant on_policy --retry-model DIR]
    [--knob op=6 ...]
python -m cogfm_hf.tasks mistake-kinds TASK --retry-model DIR [--n 200] [--seed 0] [--knob digits=(1,4) ...]"""

import argparse
import ast
import random
import sys
from pathlib import Path

from ..paths import EVAL_TASKS_DIR
from . import TASKS, add_retries, get_task
from .export import export, stale_files
from .retry import VARIANTS


def parse_knob(text: str):
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cogfm_hf.tasks", description="Reasoning task generators")
    commands = parser.add_subparsers(dest="command", required=True)
    export_parser = commands.add_parser(
        "export", help="write the fixed held-out test sets and lm-eval tasks in eval_tasks/"
    )
    export_parser.add_argument("--out", type=Path, default=EVAL_TASKS_DIR)
    export_parser.add_argument("--per-set", type=int, default=200, help="items per test set")
    export_parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    sample_parser = commands.add_parser("sample", help="print generated examples")
    sample_parser.add_argument("task", choices=sorted(TASKS))
    sample_parser.add_argument("--n", type=int, default=3)
    sample_parser.add_argument("--seed", type=int, default=0)
    sample_parser.add_argument("--split", choices=["train", "heldout"], default="train")
    sample_parser.add_argument("--retry-p", type=float, default=0.0)
    sample_parser.add_argument("--retry-variant", choices=VARIANTS, default="real")
    sample_parser.add_argument("--retry-model", type=Path, help="the checkpoint whose own mistakes on_policy writes")
    sample_parser.add_argument("--knob", action="append", default=[], type=parse_knob, metavar="NAME=VALUE")
    kinds_parser = commands.add_parser(
        "mistake-kinds", help="where a model's own mistakes leave the right step, beside the rule-made ones"
    )
    kinds_parser.add_argument("task", choices=sorted(TASKS))
    kinds_parser.add_argument("--retry-model", type=Path, required=True, help="the checkpoint whose mistakes to draw")
    kinds_parser.add_argument("--n", type=int, default=200, help="training problems (one random step of each)")
    kinds_parser.add_argument("--seed", type=int, default=0)
    kinds_parser.add_argument("--knob", action="append", default=[], type=parse_knob, metavar="NAME=VALUE")
    args = parser.parse_args(argv)

    if args.command == "export":
        if args.check:
            stale = stale_files(args.out, TASKS, args.per_set)
            if stale:
                sys.exit(
                    f"{len(stale)} file(s) in {args.out} differ from the generators: {stale[:5]}; "
                    "run `python -m cogfm_hf.tasks export` and commit the result (bump EXPORT_VERSION)."
                )
            print(f"{args.out}: up to date")
            return
        written = export(args.out, TASKS, args.per_set)
        print(f"wrote {len(written)} files to {args.out}")
        return

    if args.command == "mistake-kinds":
        from .on_policy import ModelMistakes, mistake_kinds

        task, knobs = get_task(args.task), dict(args.knob)
        drawn = {
            "on_policy": mistake_kinds(task, ModelMistakes(args.retry_model).mistake, args.n, args.seed, knobs),
            "real": mistake_kinds(task, task.mistake, args.n, args.seed, knobs),
        }
        print(f"where {args.n} mistakes leave the right step ({args.task}, seed {args.seed}, knobs {knobs}):")
        for variant, kinds in drawn.items():
            shares = ", ".join(f"{kind} {100 * count / args.n:.0f}%" for kind, count in kinds.most_common())
            print(f"  {variant}: {shares}")
        return

    if (args.retry_variant == "on_policy") != (args.retry_model is not None):
        parser.error("--retry-model is the checkpoint --retry-variant on_policy draws from: give both or neither")
    model_mistakes = None
    if args.retry_model is not None:
        from .on_policy import ModelMistakes

        model_mistakes = ModelMistakes(args.retry_model)
    task = get_task(args.task)
    generator = task.generate(args.seed, args.split, **dict(args.knob))
    rng = random.Random(args.seed)
    for _ in range(args.n):
        example = next(generator)
        if args.retry_p:
            example = add_retries(example, task, args.retry_p, rng, args.retry_variant, model_mistakes)
        print(f"# difficulty {example.difficulty}, template {example.template_id}\n{example.text}")


if __name__ == "__main__":
    main()
