"""Reading a final answer out of model output: the one implementation that training, tests and the
lm-evaluation-harness tasks share.

This file imports only the standard library because `python -m cogfm_hf.tasks export` copies it,
byte for byte, to `eval_tasks/answers.py`: the lm-eval tasks must score a checkpoint in a process
where `cogfm_hf` is not installed. A test fails when the copy is stale.
"""

from __future__ import annotations

import re

# Written after a mistake: "what came since the last step is wrong, take it back".
BACK = "<|back|>"
ANSWER_PREFIX = "Answer: "

_FIRST_ANSWER_LINE = re.compile(rf"^.*?{re.escape(ANSWER_PREFIX)}[^\n]*", re.DOTALL)
_ANSWER_AFTER_CUE = re.compile(r"answer\s*(?:is|was|:|=)?\s*[:=]?\s*[*`\"'(\[]*\s*(-?[A-Za-z0-9_]+)", re.IGNORECASE)


def first_answer(text: str) -> str:
    """`text` up to the end of its first answer line (a model may go on to write a new problem)."""
    match = _FIRST_ANSWER_LINE.match(text)
    return match.group(0) if match else text


def extract_answer(text: str, pattern: str, candidates: list[str] | None = None) -> str | None:
    """The final answer in free text: the last 'answer (is|:) X', else the last token matching `pattern`;
    with `candidates`, only those count (a prompt that asks "X or Y?")."""

    def admissible(token):
        return re.fullmatch(pattern, token) and (candidates is None or token in candidates)

    cued = [m.group(1) for m in _ANSWER_AFTER_CUE.finditer(text) if admissible(m.group(1))]
    if cued:
        return cued[-1]
    tokens = [t for t in re.findall(rf"(?<![\w-])({pattern})(?!\w)", text) if admissible(t)]
    return tokens[-1] if tokens else None


def starts_with_marker(text: str) -> bool:
    """Whether a continuation opens by taking back what came before (leading whitespace allowed)."""
    return text.lstrip(" ").startswith(BACK)
