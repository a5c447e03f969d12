"""Multi-digit arithmetic with a digit-level scratchpad, least-significant digit first.

Format (addition; subtraction writes borrows):

    347+589=?
    7+9+0=16 write 6 carry 1.
    4+8+1=13 write 3 carry 1.
    3+5+1=9 write 9 carry 0.
    Answer: 936

Working from the least-significant digit lets a small model produce each digit from the ones just
written (Lee et al. 2023); multiplication shows one partial product per digit, then their sum. Knobs:
digits (of the first operand; the second has 1..digits), operation
("+", "-", "*" or "mixed"), order ("msd" as above, or "lsd": the operands and the answer written least-significant
digit first, `743+985=?` ... `Answer: 639`, the format position coupling reads; the steps are the same).
Subtraction always has the larger operand first. Out-of-distribution
buckets have more digits than training, so here — unlike the other tasks — the prompt grows with
difficulty: the problem is its own prompt.
"""

from __future__ import annotations

import random

from .base import Example, ReasoningTask, check_range, draw, template_id

OPERATIONS = ("+", "-", "*")
ORDERS = ("msd", "lsd")


def digits_lsd_first(n: int, width: int) -> list[int]:
    return [(n // 10**i) % 10 for i in range(width)]


class ArithmeticTask(ReasoningTask):
    name = "arithmetic"
    difficulty_knob = "digits"
    default_knobs = dict(digits=3, operation="mixed", order="msd")
    train_knobs = dict(digits=(1, 5))
    buckets = {
        **{f"digits{k}": ("id", dict(digits=k)) for k in (2, 3, 4, 5)},
        **{f"digits{k}": ("ood", dict(digits=k)) for k in (6, 7, 8)},
    }

    def check_knobs(self, knobs):
        knobs["digits"] = check_range(self.name, "digits", knobs["digits"], 1)
        if knobs["operation"] not in OPERATIONS + ("mixed",):
            raise ValueError(
                f"{self.name}: knob 'operation' must be one of {OPERATIONS + ('mixed',)}, got {knobs['operation']!r}"
            )
        if knobs["order"] not in ORDERS:
            raise ValueError(f"{self.name}: knob 'order' must be one of {ORDERS}, got {knobs['order']!r}")
        if knobs["order"] == "lsd" and knobs["operation"] not in ("+", "-"):
            raise ValueError(
                f"{self.name}: order 'lsd' is written for the column-by-column operations '+' and '-' "
                f"(a multiplication's partial products are not one line per digit), got operation "
                f"{knobs['operation']!r}"
            )

    def sample(self, rng: random.Random, knobs: dict) -> Example:
        digits = draw(rng, knobs["digits"])
        operation = rng.choice(OPERATIONS) if knobs["operation"] == "mixed" else knobs["operation"]
        a = rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)
        b = rng.randint(0, 10 ** rng.randint(1, digits) - 1)
        if operation == "-" and b > a:
            a, b = b, a
        if operation == "+":
            steps, marks, pattern, answer = self._add(a, b)
        elif operation == "-":
            steps, marks, pattern, answer = self._subtract(a, b)
        else:
            steps, marks, pattern, answer = self._multiply(a, b)
        heads = [step[: step.index("=") + 1] for step in steps]
        shape = f"arith|{operation}|{len(str(a))}|{len(str(b))}|{pattern}"  # the same in either order
        written = (lambda n: str(n)[::-1]) if knobs["order"] == "lsd" else str
        return Example(
            task=self.name,
            prompt=f"{written(a)}{operation}{written(b)}=?\n",
            steps=steps,
            answer=written(answer),
            difficulty=digits,
            template_id=template_id(shape),
            meta=dict(heads=heads, results=marks),
        )

    @staticmethod
    def _add(a, b):
        width = max(len(str(a)), len(str(b)))
        if len(str(a + b)) > width:  # a final carry gets its own column of zeros
            width += 1
        steps, marks, carry, pattern = [], [], 0, ""
        for x, y in zip(digits_lsd_first(a, width), digits_lsd_first(b, width)):
            total = x + y + carry
            head = f"{x}+{y}+{carry}="
            steps.append(f"{head}{total} write {total % 10} carry {total // 10}.\n")
            marks.append([len(head), len(head) + len(str(total))])
            carry, pattern = total // 10, pattern + str(total // 10)
        return steps, marks, pattern, a + b

    @staticmethod
    def _subtract(a, b):
        width = len(str(a))
        steps, marks, borrow, pattern = [], [], 0, ""
        for x, y in zip(digits_lsd_first(a, width), digits_lsd_first(b, width)):
            difference = x - y - borrow
            new_borrow = int(difference < 0)
            head = f"{x}+10-{y}-{borrow}=" if new_borrow else f"{x}-{y}-{borrow}="
            value = difference + 10 * new_borrow
            steps.append(f"{head}{value} write {value} borrow {new_borrow}.\n")
            marks.append([len(head), len(head) + len(str(value))])
            borrow, pattern = new_borrow, pattern + str(new_borrow)
        return steps, marks, pattern, a - b

    @staticmethod
    def _multiply(a, b):
        steps, marks, pattern, partials = [], [], "", []
        for position, y in enumerate(digits_lsd_first(b, len(str(b)))):
            head = f"{a}*{y}*1{'0' * position}="
            partial = a * y * 10**position
            steps.append(f"{head}{partial}.\n")
            marks.append([len(head), len(head) + len(str(partial))])
            partials.append(partial)
            pattern += str(min(y, 2))  # 0, 1 or "other" digit: the cases a scratchpad treats differently
        if len(partials) > 1:
            head = "+".join(map(str, partials)) + "="
            steps.append(f"{head}{sum(partials)}.\n")
            marks.append([len(head), len(head) + len(str(sum(partials)))])
        return steps, marks, pattern, a * b

    def wrong_steps(self, example, step_index, count, rng):
        # A step repeats its result ("=5 write 5"): a one-digit change would contradict itself, an easy tell.
        return None

    def mistake(self, example, step_index, rng):
        # The step written up to its result, with one result digit wrong.
        step = example.steps[step_index]
        start, end = example.meta["results"][step_index]
        result = list(step[start:end])
        position = rng.randrange(len(result))
        choices = [
            d for d in "0123456789" if d != result[position] and not (position == 0 and d == "0" and len(result) > 1)
        ]
        result[position] = rng.choice(choices)
        return step[:start] + "".join(result)


class AdditionTask(ArithmeticTask):
    """Addition only, with its own test sets: the arithmetic scratchpad without one-step multiplication.

    The ablation (docs/results.md) needs a task a 1 M-parameter model learns within minutes on 2 CPU cores:
    dependency chains need content-addressed copying ("the value after `ka=`") that such a model had not
    learned after 11 M tokens; digit-level addition reaches the learnability gate in about 2 M.
    """

    name = "addition"
    default_knobs = dict(digits=3, operation="+", order="msd")
    train_knobs = dict(digits=(1, 4))
    buckets = {
        # No 2-digit bucket: 2-digit additions have too few solution shapes for a held-out one.
        **{f"digits{k}": ("id", dict(digits=k)) for k in (3, 4)},
        **{f"digits{k}": ("ood", dict(digits=k)) for k in (5, 6, 8, 12, 16)},
    }

    def check_knobs(self, knobs):
        super().check_knobs(knobs)
        if knobs["operation"] != "+":
            raise ValueError(
                f"{self.name}: knob 'operation' is always '+' (use the arithmetic task for others), "
                f"got {knobs['operation']!r}"
            )


class ReversedAdditionTask(AdditionTask):
    """Addition written least-significant digit first (`order: lsd`): the generalising format of docs/results.md.

    The test sets hold the same problems as the addition task's (the export draws them under the name
    `addition`), written in this order, so a model trained on either format is scored on the same questions."""

    name = "addition_lsd"
    problems_of = "addition"
    default_knobs = dict(digits=3, operation="+", order="lsd")
