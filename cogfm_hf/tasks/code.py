"""Code tracing: what does a short generated Python program print?

Format:

    def f(n):
        return n * 2 + 1
    k = 4
    w = 7
    m = k + 3
    for i in range(3):
        m = m + i
    w = w * m
    if m > 5:
        k = f(m)
    else:
        k = m - 2
    print(k)
    ---
    k = 4
    m = k + 3 = 7
    i=0: m = m + i = 7
    i=1: m = m + i = 8
    i=2: m = m + i = 10
    m > 5 is True
    k = f(m) = f(10) = 21
    Answer: 21

Every `statements` top-level statement feeds the printed variable; `distractors` statements write
other variables (they may read the relevant ones) and are left out of the trace. The answer is the
program's real output: `run_program` executes it with only `range` and `print` available, under a line budget,
and a time limit checked at every line, and the trace (from our own evaluator) must agree with it. It runs only
programs of the generator's own grammar (`check_generated`) and refuses any other unrun: it is a checker of
our programs, not a sandbox for foreign code. Knobs: statements,
distractors, nesting (1 = flat loop/if bodies, 2 = a loop or if inside them), loop_count (largest
range), max_prompt_chars (programs longer than this are redrawn: out-of-distribution buckets use it
to keep their deeper programs inside the training prompt-length range — statements differ too much in
length for a statement cap to do that).
"""

from __future__ import annotations

import random
import re
import sys
import time

from .base import Example, ReasoningTask, check_range, draw, template_id

NAMES = list("abcdghkmnpqrstuwxyz")  # no e/f/i/j/l/o/v: f is the function, i the loop variable
LOOP_OPS = "+-"
OPS = "+-*"


class ProgramTimeout(RuntimeError):
    pass


# The generator's alphabet, and nothing else: one-letter names, small integers, + - * > = : ( ), the keywords of
# assignments, if/else, `for ... in range(...)` and a one-line `def f`, and the builtins range and print. Without
# '.', '[', quotes or any other name, a program cannot reach past the integers (`().__class__...`), import or
# call anything; without '**' no single line can compute for long, so the time limit checked at every line holds.
ALLOWED_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 \n()*+-:=>")
ALLOWED_WORDS = frozenset({"def", "return", "if", "else", "for", "in", "range", "print"})
_WORD = re.compile(r"[a-z_][a-z0-9_]*|[0-9]+")
MAX_DIGITS = 12  # generated programs write one- and two-digit constants


class ForeignProgram(ValueError):
    """A program the generator could not have written: run_program refuses it without running it."""


def check_generated(source: str) -> None:
    if stray := set(source) - ALLOWED_CHARACTERS:
        raise ForeignProgram(f"characters {sorted(stray)} are not in the generator's alphabet")
    if "**" in source:
        raise ForeignProgram("'**' is not in the generator's grammar")
    for word in _WORD.findall(source):
        if word[0].isdigit():
            if len(word) > MAX_DIGITS:
                raise ForeignProgram(f"constant {word[:20]}... is longer than {MAX_DIGITS} digits")
        elif len(word) > 1 and word not in ALLOWED_WORDS:
            raise ForeignProgram(f"name {word!r} is not one the generator writes")


def run_program(source: str, max_lines: int = 100_000, timeout_s: float = 1.0) -> str:
    """Execute one program of the generator's grammar (`check_generated`; anything else is refused unrun) with
    only `range` and `print`, stopping it past `max_lines` executed lines or `timeout_s` seconds (checked at every
    line); returns what it printed."""
    check_generated(source)
    printed: list[str] = []
    deadline = time.monotonic() + timeout_s
    budget = [max_lines]

    def tracer(frame, event, arg):
        if event == "line":
            budget[0] -= 1
            # Checked at every line: a value that squares itself in a loop makes each line slower, and is stopped
            # one line after the limit, while its memory is still megabytes.
            if budget[0] < 0 or time.monotonic() > deadline:
                raise ProgramTimeout(f"program exceeded {max_lines} lines or {timeout_s}s")
        return tracer

    namespace = {"__builtins__": {"range": range, "print": lambda *a: printed.append(" ".join(map(str, a)))}}
    code = compile(source, "<generated>", "exec")
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        exec(code, namespace)
    finally:
        sys.settrace(previous)
    return "\n".join(printed)


class _Program:
    """Builds one program: source lines, the trace of its relevant statements, and its shape."""

    def __init__(self, rng: random.Random, knobs: dict, statements: int):
        self.rng, self.knobs = rng, knobs
        names = rng.sample(NAMES, len(NAMES))
        self.relevant_names, self.distractor_names = names[:5], names[5:10]
        self.env: dict[str, int] = {}
        self.lines: list[str] = []
        self.trace: list[tuple[str, int, int]] = []  # (text, result start, result end)
        self.shape: list[str] = []
        self.function = None
        if rng.random() < 0.5:
            self.function = (rng.choice("+*"), rng.randint(2, 3), rng.choice("+-"), rng.randint(1, 5))
            op1, c1, op2, c2 = self.function
            self.lines += ["def f(n):", f"    return n {op1} {c1} {op2} {c2}"]
        self.statements = statements

    def call_f(self, value: int) -> int:
        op1, c1, op2, c2 = self.function
        inner = value + c1 if op1 == "+" else value * c1
        return inner + c2 if op2 == "+" else inner - c2

    def emit_trace(self, head: str, result) -> None:
        text = f"{head}{result}"
        self.trace.append((text + "\n", len(head), len(text)))

    # -- statements ---------------------------------------------------------------------------
    def assign(self, target, left, op, right, indent, traced, prefix=""):
        right_text = str(right) if isinstance(right, int) else right
        right_value = right if isinstance(right, int) else self.env[right]
        value = (
            self.env[left] + right_value
            if op == "+"
            else self.env[left] - right_value
            if op == "-"
            else self.env[left] * right_value
        )
        self.lines.append(f"{'    ' * indent}{target} = {left} {op} {right_text}")
        self.env[target] = value
        if traced:
            self.emit_trace(f"{prefix}{target} = {left} {op} {right_text} = ", value)
        return value

    def relevant_statement(self, current: str, index: int) -> str:
        rng, knobs = self.rng, self.knobs
        kinds = ["expr", "loop", "if"] + (["call"] if self.function else [])
        kind = rng.choice(kinds) if index else "expr"
        target = rng.choice(self.relevant_names)
        defined = [n for n in self.relevant_names if n in self.env]
        if kind == "expr":
            op = rng.choice(OPS)
            right = rng.choice(defined) if defined and rng.random() < 0.4 else rng.randint(1, 9)
            self.assign(
                target, current, op, right if op != "*" or isinstance(right, int) else rng.randint(2, 3), 0, True
            )
            self.shape.append(f"expr{op}{'v' if isinstance(right, str) else 'c'}")
        elif kind == "call":
            value = self.call_f(self.env[current])
            self.lines.append(f"{target} = f({current})")
            self.emit_trace(f"{target} = f({current}) = f({self.env[current]}) = ", value)
            self.env[target] = value
            self.shape.append("call")
        elif kind == "loop":
            target = current
            count = rng.randint(1, knobs["loop_count"])
            op, step = rng.choice(LOOP_OPS), rng.choice(["i", rng.randint(1, 5)])
            nested = knobs["nesting"] >= 2 and rng.random() < 0.3
            self.lines.append(f"for i in range({count}):")
            inner_count = rng.randint(1, 2) if nested else 0
            for i in range(count):
                self.env["i"] = i
                if nested:
                    if i == 0:
                        self.lines.append(f"    for j in range({inner_count}):")
                    for j in range(inner_count):
                        self.env["j"] = j
                        self._loop_body(
                            target, op, "j" if step == "i" else step, i == 0 and j == 0, 2, f"i={i} j={j}: "
                        )
                else:
                    self._loop_body(target, op, step, i == 0, 1, f"i={i}: ")
            self.env.pop("i"), self.env.pop("j", None)
            self.shape.append(f"loop{op}{'v' if step == 'i' else 'c'}{'n' if nested else ''}")
        else:  # if / else
            threshold = rng.randint(0, 20)
            condition = self.env[current] > threshold
            self.lines.append(f"if {current} > {threshold}:")
            self.emit_trace(f"{current} > {threshold} is ", condition)
            ops = [rng.choice(OPS), rng.choice(OPS)]
            constants = [rng.randint(1, 9) if o != "*" else rng.randint(2, 3) for o in ops]
            for branch, (op, constant) in enumerate(zip(ops, constants)):
                taken = condition == (branch == 0)
                if branch:
                    self.lines.append("else:")
                saved = dict(self.env)
                self.assign(target, current, op, constant, 1, taken)
                if not taken:
                    self.env = saved
            self.shape.append(f"if{ops[0]}{ops[1]}")
        return target

    def _loop_body(self, target, op, step, first, indent, prefix):
        if first:
            self.assign(target, target, op, step, indent, True, prefix)
        else:  # the source line is written once; later iterations only run and trace
            lines = len(self.lines)
            self.assign(target, target, op, step, indent, True, prefix)
            del self.lines[lines:]

    def distractor_statement(self) -> None:
        rng = self.rng
        target = rng.choice(self.distractor_names)
        readable = [n for n in self.env if n not in ("i", "j")]
        if not readable or rng.random() < 0.3:
            value = rng.randint(1, 9)
            self.lines.append(f"{target} = {value}")
            self.env[target] = value
            return
        self.assign(target, rng.choice(readable), rng.choice("+-"), rng.randint(1, 9), 0, False)

    def build(self, distractors: int):
        start = self.rng.choice(self.relevant_names)
        value = self.rng.randint(1, 9)
        self.lines.append(f"{start} = {value}")
        self.env[start] = value
        self.emit_trace(f"{start} = ", value)
        slots = sorted(self.rng.randint(0, self.statements) for _ in range(distractors))
        current = start
        for index in range(self.statements + 1):
            while slots and slots[0] == index:
                slots.pop(0)
                self.distractor_statement()
            if index < self.statements:
                current = self.relevant_statement(current, index + 1)
        self.lines.append(f"print({current})")
        return current


class CodeTask(ReasoningTask):
    name = "code"
    difficulty_knob = "statements"
    default_knobs = dict(statements=3, distractors=(0, 4), nesting=1, loop_count=3, max_prompt_chars=None)
    train_knobs = dict(statements=(1, 5))
    buckets = {
        **{f"stmts{k}": ("id", dict(statements=k)) for k in (2, 3, 4, 5)},
        **{f"stmts{k}": ("ood", dict(statements=k, distractors=(0, 1), max_prompt_chars=250)) for k in (7, 8)},
    }

    def check_knobs(self, knobs):
        knobs["statements"] = check_range(self.name, "statements", knobs["statements"], 1)
        knobs["distractors"] = check_range(self.name, "distractors", knobs["distractors"], 0)
        for knob, low, high in (("nesting", 1, 2), ("loop_count", 1, 10)):
            if not isinstance(knobs[knob], int) or not low <= knobs[knob] <= high:
                raise ValueError(
                    f"{self.name}: knob {knob!r} must be an integer in [{low}, {high}], got {knobs[knob]!r}"
                )
        if knobs["max_prompt_chars"] is not None and knobs["max_prompt_chars"] < 20:
            raise ValueError(
                f"{self.name}: knob 'max_prompt_chars' must be >= 20 or None, got {knobs['max_prompt_chars']!r}"
            )

    def sample(self, rng: random.Random, knobs: dict) -> Example:
        statements = draw(rng, knobs["statements"])
        for _ in range(500):
            program = _Program(rng, knobs, statements)
            printed_name = program.build(draw(rng, knobs["distractors"]))
            source = "\n".join(program.lines) + "\n"
            if knobs["max_prompt_chars"] is None or len(source) + 4 <= knobs["max_prompt_chars"]:
                break
        else:
            raise ValueError(
                f"{self.name}: no program of {statements} statements fits max_prompt_chars="
                f"{knobs['max_prompt_chars']} in 500 draws; raise the knob"
            )
        answer = run_program(source)
        if answer != str(program.env[printed_name]):  # our trace and Python must agree
            raise AssertionError(f"trace says {program.env[printed_name]}, Python printed {answer!r}:\n{source}")
        return Example(
            task=self.name,
            prompt=source + "---\n",
            steps=[t for t, _, _ in program.trace],
            answer=answer,
            difficulty=statements,
            template_id=template_id("code|" + "|".join(program.shape)),
            meta=dict(
                heads=[t[: t.index("=") + 1] if "=" in t else t[:s] for t, s, _ in program.trace],
                results=[[s, e] for _, s, e in program.trace],
            ),
        )

    def mistake(self, example, step_index, rng):
        # The traced step written up to its value, with a wrong value.
        step = example.steps[step_index]
        start, end = example.meta["results"][step_index]
        value = step[start:end]
        if value in ("True", "False"):
            return step[:start] + ("False" if value == "True" else "True")
        wrong = int(value) + rng.choice([-3, -2, -1, 1, 2, 3, 10])
        return step[:start] + str(wrong)


def program_of(example: Example) -> str:
    """The Python source inside a code-tracing prompt."""
    return re.sub(r"---\n$", "", example.prompt)
