"""Which parts of a dependency-chains solution a model has learned: teacher-forced argmax accuracy per role.

    python -m cogfm_hf.experiments.role_probe CHECKPOINT [--task chains_plan] [--n 150] [--op 1-4] [--first-errors]

Exact match says whether a whole answer is right; a chains answer needs several kinds of token to be right at
once, and this probe says which kind fails. It feeds gold solutions of training-template problems (op 1-4) and
scores, for the token that starts each role, whether the model's most likely next token is the gold one (`--op`
probes other depths: deeper than trained, it says which role breaks first):

- `chains`: a step's name (which operation comes next: a search back from the question; the first step's apart),
  its operand names (a lookup of the name's definition), the operands' values (a lookup of a constant or of an
  earlier result), the result (one-digit arithmetic), and the answer (a copy of the last result);
- `chains_plan` adds the walk: the first line's name (a copy of the question's name), each later line's name (a
  copy of the line above's first operand), its operands (the lookup of a definition by name) and the constant's
  value (the lookup of a value by name);
- `chains_link` adds each walk line's user (a copy of the line above's name; `?` for the question's own line);
- every task: the end, `Answer` after the last operation (where a model may have learned to stop by count).

`--first-errors` decodes instead (greedy, from the prompt alone) and counts where each solution first leaves the
gold one: the role and the line (walk line k, operation k) of the first wrong character. Teacher forcing scores
every token with the right text before it; this says what breaks first when the model writes alone.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

import torch

from ..tasks import get_task
from ..tasks.answers import ANSWER_PREFIX

STEP = re.compile(r"(\w+)=(\w+)[-+*](\w+)=(\d+)[-+*](\d+)=(\d+)\.\n")
WALK_STEP = re.compile(r"(\w+)=(\w+)[-+*](\w+)\.\n")
WALK_CONSTANT = re.compile(r"(\w+)=(\d+)\.\n")
LINK = re.compile(r"([?\w]+)>")  # a chains_link walk line's opening: the name that uses the line's name
STEP_ROLES = ("step name", "operand 1", "operand 2", "value 1", "value 2", "result")
PROBED_TASKS = ("chains", "chains_plan", "chains_link")


def walk_length(example) -> int:
    """How many lines of `example`'s solution are the walk (the formats that write it: op + 1; `chains`: none)."""
    return example.difficulty + 1 if example.task in ("chains_plan", "chains_link") else 0


def role_offsets(example) -> list[tuple[str, int, str]]:
    """(role, character offset in prompt + solution, gold text) of every probed token of one example."""
    walk_lines = walk_length(example)
    offsets, position = [], len(example.prompt)
    for index, line in enumerate(example.steps):
        if index < walk_lines and example.task == "chains_link":
            link = LINK.match(line)
            offsets.append(("walk user (the question)" if index == 0 else "walk user", position, link.group(1)))
            line, position = line[link.end() :], position + link.end()
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
    offsets.append(("end", position, ANSWER_PREFIX))
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


def line_name(example, line: int) -> str:
    """What line `line` (0-based) of `example`'s solution is: a walk line, an operation, or the answer."""
    walk_lines = walk_length(example)
    if line < walk_lines:
        return f"walk line {line + 1}"
    return f"operation {line - walk_lines + 1}" if line < len(example.steps) else "answer line"


@torch.no_grad()
def first_errors(model, tokenizer, task: str, n: int = 60, seed: int = 77, op=(1, 4)) -> Counter:
    """(role, line) -> problems whose greedy solution first leaves the gold one there, over `n` training-template
    problems of `task`; ("right", "") counts the solutions that are right to the end of the answer."""
    if task not in PROBED_TASKS:
        raise ValueError(f"role_probe: task must be one of {PROBED_TASKS}, got {task!r}")
    counts: Counter = Counter()
    model.eval()
    for _, example in zip(range(n), get_task(task).generate(seed, "train", op=op)):
        gold = example.clean_solution()
        prompt = tokenizer(example.prompt, return_tensors="pt")
        budget = len(tokenizer(gold, add_special_tokens=False).input_ids) + 8
        output = model.generate(**prompt, max_new_tokens=budget, do_sample=False)
        written = tokenizer.decode(output[0, prompt.input_ids.shape[1] :], skip_special_tokens=True)
        if written.startswith(gold):
            counts["right", ""] += 1
            continue
        leaves = next((i for i, (a, b) in enumerate(zip(written, gold)) if a != b), min(len(written), len(gold)))
        at = len(example.prompt) + leaves
        role = max((offset, role) for role, offset, _ in role_offsets(example) if offset <= at)[1]
        counts[role, line_name(example, gold[:leaves].count("\n"))] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--task", choices=PROBED_TASKS, default="chains_plan")
    parser.add_argument("--n", type=int, default=150, help="problems probed")
    parser.add_argument("--seed", type=int, default=77, help="the problems' seed")
    parser.add_argument("--op", default="1-4", help="depths probed: N or LOW-HIGH (default 1-4, the trained range)")
    parser.add_argument("--first-errors", action="store_true", help="decode, and count where solutions first go wrong")
    args = parser.parse_args(argv)
    low, _, high = args.op.partition("-")
    if not (low.isdigit() and (high or low).isdigit()):
        parser.error(f"--op must be N or LOW-HIGH, got {args.op!r}")
    op = (int(low), int(high or low))
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, trust_remote_code=True)
    if args.first_errors:
        counts = first_errors(model, tokenizer, args.task, args.n, args.seed, op)
        print(f"| first wrong: role | line | problems ({args.task}, {args.n}, op {args.op}, greedy) |\n|---|---|---|")
        for (role, line), count in counts.most_common():
            print(f"| {role} | {line} | {count} |")
        return
    print(f"| role | teacher-forced argmax right ({args.task}, {args.n} problems, op {args.op}) |\n|---|---|")
    for role, (right, total) in probe(model, tokenizer, args.task, args.n, args.seed, op).items():
        print(f"| {role} | {100 * right / total:.1f}% of {total} |")


if __name__ == "__main__":
    main()
