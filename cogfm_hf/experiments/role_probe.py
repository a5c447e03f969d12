"""Which parts of a dependency-chains solution a model has learned: teacher-forced argmax accuracy per role.

    python -m cogfm_hf.experiments.role_probe CHECKPOINT [--task chains_plan] [--n 150]

Exact match says whether a whole answer is right; a chains answer needs several kinds of token to be right at
once, and this probe says which kind fails. It feeds gold solutions of training-template problems (op 1-4) and
scores, for the token that starts each role, whether the model's most likely next token is the gold one:

- `chains`: a step's name (which operation comes next: a search back from the question; the first step's apart),
  its operand names (a lookup of the name's definition), the operands' values (a lookup of a constant or of an
  earlier result), the result (one-digit arithmetic), and the answer (a copy of the last result);
- `chains_plan` adds the walk: the first line's name (a copy of the question's name), each later line's name (a
  copy of the line above's first operand), its operands (the lookup of a definition by name) and the constant's
  value (the lookup of a value by name).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch

from ..tasks import get_task
from ..tasks.answers import ANSWER_PREFIX

STEP = re.compile(r"(\w+)=(\w+)[-+*](\w+)=(\d+)[-+*](\d+)=(\d+)\.\n")
WALK_STEP = re.compile(r"(\w+)=(\w+)[-+*](\w+)\.\n")
WALK_CONSTANT = re.compile(r"(\w+)=(\d+)\.\n")
STEP_ROLES = ("step name", "operand 1", "operand 2", "value 1", "value 2", "result")
PROBED_TASKS = ("chains", "chains_plan")


def role_offsets(example) -> list[tuple[str, int, str]]:
    """(role, character offset in prompt + solution, gold text) of every probed token of one example."""
    walk_lines = example.difficulty + 1 if example.task == "chains_plan" else 0
    offsets, position = [], len(example.prompt)
    for index, line in enumerate(example.steps):
        if index < walk_lines:
            step, constant = WALK_STEP.fullmatch(line), WALK_CONSTANT.fullmatch(line)
            match, roles = (
                (step, ("walk name", "walk operand 1", "walk operand 2"))
                if step
                else (constant, ("walk name", "constant value"))
            )
        else:
            match, roles = STEP.fullmatch(line), STEP_ROLES
        if match is None:
            raise ValueError(
                f"role_probe: line {index} of a {example.task} solution, {line!r}, is not a step of two operands "
                "(the probe reads the default knobs' format, max_in_degree 2)"
            )
        for group, role in enumerate(roles, start=1):
            if index == 0 and role == "walk name":
                role = "walk name (the question's)"
            elif index == walk_lines and role == "step name":
                role = "step name (the first)"
            offsets.append((role, position + match.start(group), match.group(group)))
        position += len(line)
    offsets.append(("answer", position + len(ANSWER_PREFIX), example.answer))
    return offsets


@torch.no_grad()
def probe(model, tokenizer, task: str, n: int = 150, seed: int = 77, op=(1, 4)) -> dict[str, tuple[int, int]]:
    """Role -> (tokens predicted right, tokens probed) over `n` training-template problems of `task`."""
    if task not in PROBED_TASKS:
        raise ValueError(f"role_probe: task must be one of {PROBED_TASKS}, got {task!r}")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    model.eval()
    for _, example in zip(range(n), get_task(task).generate(seed, "train", op=op)):
        encoded = tokenizer(example.prompt + example.clean_solution(), return_offsets_mapping=True)
        ids = encoded["input_ids"]
        predicted = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        token_at = {start: i for i, (start, end) in enumerate(encoded["offset_mapping"]) if end > start}
        for role, offset, _ in role_offsets(example):
            i = token_at.get(offset)
            if i:  # a role that starts inside a merged token has no token of its own to predict
                counts[role][0] += int(predicted[i - 1] == ids[i])
                counts[role][1] += 1
    return {role: (right, total) for role, (right, total) in counts.items()}


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--task", choices=PROBED_TASKS, default="chains_plan")
    parser.add_argument("--n", type=int, default=150, help="problems probed")
    parser.add_argument("--seed", type=int, default=77, help="the problems' seed")
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, trust_remote_code=True)
    print(f"| role | teacher-forced argmax right ({args.task}, {args.n} problems, op 1-4) |\n|---|---|")
    for role, (right, total) in probe(model, tokenizer, args.task, args.n, args.seed).items():
        print(f"| {role} | {100 * right / total:.1f}% of {total} |")


if __name__ == "__main__":
    main()
