"""Dependency chains ("iGSM-lite", after Physics of Language Models Part 2.1).

Format:

    Mod 10.
    ka=3.
    lo=ka*ru.
    ru=5.
    bi=lo+ka.
    te=ru-ka.
    bi=?
    lo=ka*ru=3*5=5.
    bi=lo+ka=5+3=8.
    Answer: 8

A random DAG of variables, each a constant or one operator (+ - *) mod P over 2..max_in_degree
earlier variables. `op` operations are necessary for the queried variable (each uses the one before,
so all are needed); `distractors` statements are not. The solution computes exactly the necessary
operations in dependency order. One statement per line, and the question as `bi=?`, so that a name is
the same token everywhere (byte-level BPE gives a word after a space its own token: with statements
separated by spaces, `lo` in the prompt and in the solution were different tokens, and small models did
not learn to connect them). Knobs: op, distractors, shuffle, modulus, max_in_degree,
max_statements (caps the prompt: distractors are dropped to fit).
"""

from __future__ import annotations

import random

from .base import Example, ReasoningTask, check_range, draw, template_id

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
NAMES = [c + v for c in CONSONANTS for v in VOWELS]  # 70 two-letter names
OPERATORS = "+-*"


def apply(operator: str, values: list[int], modulus: int) -> int:
    result = values[0]
    for value in values[1:]:
        result = result + value if operator == "+" else result - value if operator == "-" else result * value
    return result % modulus


class ChainsTask(ReasoningTask):
    name = "chains"
    difficulty_knob = "op"
    # Up to 4 distractors: with up to 14 (test sets v2), CPU-sized models stayed near chance on every op for the
    # budgets we can afford (docs/results.md, the learnability gate).
    default_knobs = dict(op=4, distractors=(0, 4), shuffle=True, modulus=10, max_in_degree=2, max_statements=None)
    train_knobs = dict(op=(1, 8))
    buckets = {
        **{f"op{k}": ("id", dict(op=k)) for k in (2, 4, 6, 8)},
        # Deeper than training. With at most 4 distractors, deeper problems cannot keep their prompts in the
        # training length range (as logic and code do): the extra necessary statements make them longer.
        **{f"op{k}": ("ood", dict(op=k)) for k in (10, 12, 14)},
    }

    def check_knobs(self, knobs):
        knobs["op"] = check_range(self.name, "op", knobs["op"], 1)
        knobs["distractors"] = check_range(self.name, "distractors", knobs["distractors"], 0)
        if not isinstance(knobs["modulus"], int) or knobs["modulus"] < 2:
            raise ValueError(f"{self.name}: knob 'modulus' must be an integer >= 2, got {knobs['modulus']!r}")
        if not isinstance(knobs["max_in_degree"], int) or knobs["max_in_degree"] < 2:
            raise ValueError(
                f"{self.name}: knob 'max_in_degree' must be an integer >= 2, got {knobs['max_in_degree']!r}"
            )
        if knobs["max_statements"] is not None and knobs["max_statements"] < 1:
            raise ValueError(
                f"{self.name}: knob 'max_statements' must be >= 1 or None, got {knobs['max_statements']!r}"
            )

    def sample(self, rng: random.Random, knobs: dict) -> Example:
        op, modulus = draw(rng, knobs["op"]), knobs["modulus"]
        names = iter(rng.sample(NAMES, len(NAMES)))
        values: dict[str, int] = {}
        definitions: dict[str, tuple[str, list[str]] | None] = {}  # None = constant
        steps: list[tuple[str, str, list[str]]] = []  # necessary operations, in solution order
        shape = []

        def new_constant() -> str:
            name = next(names)
            values[name], definitions[name] = rng.randrange(modulus), None
            return name

        for k in range(op):
            degree = rng.randint(2, knobs["max_in_degree"])
            operands = [steps[-1][0]] if steps else [new_constant()]
            while len(operands) < degree:
                known = [n for n in values if n not in operands]
                operands.append(rng.choice(known) if known and rng.random() < 0.5 else new_constant())
            operator, target = rng.choice(OPERATORS), next(names)
            values[target] = apply(operator, [values[o] for o in operands], modulus)
            definitions[target] = (operator, operands)
            steps.append((target, operator, operands))
            step_index = {s[0]: i for i, s in enumerate(steps)}
            shape.append(
                operator + "(" + ",".join(f"s{step_index[o]}" if o in step_index else "c" for o in operands) + ")"
            )

        necessary_statements = len(definitions)
        n_distractors = draw(rng, knobs["distractors"])
        if knobs["max_statements"] is not None:
            n_distractors = max(0, min(n_distractors, knobs["max_statements"] - necessary_statements))
        distractors = []
        for _ in range(n_distractors):
            if rng.random() < 0.35:
                distractors.append(new_constant())
                continue
            operands = rng.sample(list(values), min(len(values), rng.randint(2, knobs["max_in_degree"])))
            operator, target = rng.choice(OPERATORS), next(names)
            values[target] = apply(operator, [values[o] for o in operands], modulus)
            definitions[target] = (operator, operands)
            distractors.append(target)

        def statement(name):
            definition = definitions[name]
            return f"{name}={values[name]}." if definition is None else f"{name}={definition[0].join(definition[1])}."

        order = list(definitions)
        if knobs["shuffle"]:
            rng.shuffle(order)
        query = steps[-1][0]
        prompt = f"Mod {modulus}.\n" + "".join(statement(n) + "\n" for n in order) + f"{query}=?\n"
        texts, heads, results = self.solution(steps, values)
        return Example(
            task=self.name,
            prompt=prompt,
            steps=texts,
            answer=str(values[query]),
            difficulty=op,
            template_id=template_id(f"chains|mod{modulus}|" + "|".join(shape)),
            meta=dict(
                heads=heads,
                results=results,
                definitions={n: d and [d[0], d[1]] for n, d in definitions.items()},
                order=[s[0] for s in steps],
            ),
        )

    def solution(self, steps, values) -> tuple[list[str], list[str], list[list[int]]]:
        """The solution's lines, each line's head (what a weak mistake writes) and its result's span."""
        texts, heads, results = [], [], []
        for target, operator, operands in steps:
            expression = operator.join(operands)
            numbers = operator.join(str(values[o]) for o in operands)
            texts.append(f"{target}={expression}={numbers}={values[target]}.\n")
            heads.append(f"{target}=")
            results.append([len(texts[-1]) - 2 - len(str(values[target])), len(texts[-1]) - 2])
        return texts, heads, results

    def mistake(self, example, step_index, rng):
        return self.blocked_head(example, step_index, rng)

    @staticmethod
    def blocked_head(example, computed_steps, rng):
        # A variable that cannot be computed yet: one of its operands is an operation not yet computed.
        definitions, order = example.meta["definitions"], example.meta["order"]
        computed = {n for n, d in definitions.items() if d is None} | set(order[:computed_steps])
        blocked = [
            n
            for n, d in definitions.items()
            if d is not None and n not in computed and not all(o in computed for o in d[1])
        ]
        return f"{rng.choice(sorted(blocked))}=" if blocked else None


class PlannedChainsTask(ChainsTask):
    """Dependency chains with the plan written out first (`chains_plan`): the same problems and answers as `chains`.

        (the prompt of the module's example)
        bi=?
        bi=lo+ka.
        lo=ka*ru.
        ka=3.
        lo=ka*ru=3*5=5.
        bi=lo+ka=5+3=8.
        Answer: 8

    In the `chains` format the first line of the solution names the operation to compute first, which is found by
    walking the graph back from the question, several lookups deep, before a token is written: a 1 M-parameter model
    never learned it (docs/results.md). Here the walk is written down. From the question, each line copies the
    definition of the previous line's first operand (each necessary operation uses the one before it as its first
    operand, so this walk visits exactly the necessary operations) down to the constant that starts the chain; then
    the operations are computed bottom-up as in `chains`. Every token needs at most one lookup of a name's definition
    or value, and the name to look up is in the line above.
    """

    name = "chains_plan"
    problems_of = "chains"

    def solution(self, steps, values):
        forward_texts, forward_heads, forward_results = super().solution(steps, values)
        texts, heads = [], []
        for target, operator, operands in reversed(steps):
            texts.append(f"{target}={operator.join(operands)}.\n")
            heads.append(f"{target}=")
        start = steps[0][2][0]  # the first operation's first operand: always a constant
        texts.append(f"{start}={values[start]}.\n")
        heads.append(f"{start}=")
        # A walk line has no numeric result to vary (the next-step task's distractors skip it); the constant's has.
        results = [[0, 0]] * len(steps) + [[len(texts[-1]) - 2 - len(str(values[start])), len(texts[-1]) - 2]]
        return texts + forward_texts, heads + forward_heads, results + forward_results

    def mistake(self, example, step_index, rng):
        walk_lines = len(example.meta["order"]) + 1
        if step_index >= walk_lines:
            return self.blocked_head(example, step_index - walk_lines, rng)
        # In the walk: a name other than the previous line's first operand (another operand, or any defined name).
        right = example.meta["heads"][step_index]
        names = sorted(f"{n}=" for n in example.meta["definitions"] if f"{n}=" != right)
        return rng.choice(names)


class LinkedChainsTask(PlannedChainsTask):
    """Dependency chains with the walk written down and linked (`chains_link`): `chains_plan`, each walk line opened
    by the name that uses it and `>` (the question's own line by `?`). The same problems and answers as `chains`.

        (the prompt of the module's example)
        bi=?
        ?>bi=lo+ka.
        bi>lo=ka*ru.
        lo>ka=3.
        lo=ka*ru=3*5=5.
        bi=lo+ka=5+3=8.
        Answer: 8

    In `chains_plan` the operations are computed in the reverse order of the walk, so each operation's name is that
    of the walk line as far above the constant as the operation is below it: a stack. Trained on op <= 4, a model
    wrote the right operation under the wrong name from op 5 on (the name of a walk line counted from the wrong
    end). Here what comes after an operation is found by a lookup by content: the one walk line holding `>` and the
    name just computed opens with its user, the next operation's name, or with `?` where the name is the question's
    and the answer follows. `>` appears nowhere else (not in prompts, not in the operations), so the key is unique at
    any depth. (Without the question's link, a model found every name right but stopped after 4 operations, the
    most it was trained on: the end was the absence of a key, and counting was easier.)
    """

    name = "chains_link"
    question_link = "?"

    def solution(self, steps, values):
        texts, heads, results = super().solution(steps, values)
        walk = len(steps) + 1
        # walk line k + 1 is used by walk line k's name; the first by the question
        links = [f"{self.question_link}>"] + [f"{target}>" for target, _, _ in reversed(steps)]
        texts = [link + line for link, line in zip(links, texts[:walk])] + texts[walk:]
        heads = [link + head for link, head in zip(links, heads[:walk])] + heads[walk:]
        start, end = results[walk - 1]  # the constant's value moves right by its link
        results[walk - 1] = [start + len(links[-1]), end + len(links[-1])]
        return texts, heads, results

    def mistake(self, example, step_index, rng):
        if step_index > len(example.meta["order"]):
            return super().mistake(example, step_index, rng)
        # A walk line: the right user, another name (not the previous line's first operand).
        link, right = example.meta["heads"][step_index].split(">")
        return link + ">" + rng.choice(sorted(f"{n}=" for n in example.meta["definitions"] if f"{n}=" != right))
