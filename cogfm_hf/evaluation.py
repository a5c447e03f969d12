"""Held-out evaluation of a live model on one exported test bucket: greedy accuracy, the accuracy of always
giving the bucket's most common answer (the bar a model that learned only the answer distribution clears),
and the teacher-forced loss on the gold solutions (which shows learning before accuracy does).

Used by training to print these before and after a run. The full evaluation (every bucket, the
self-correction and log-likelihood tasks) goes through lm-evaluation-harness (issue #6).
"""

from __future__ import annotations

import json
import re
from collections import Counter

import torch

from .tasks import get_task
from .tasks.base import ANSWER_PREFIX, Example
from .tasks.export import DEFAULT_DIR

_FIRST_ANSWER_LINE = re.compile(rf"^.*?{re.escape(ANSWER_PREFIX)}[^\n]*", re.DOTALL)


def first_answer(text: str) -> str:
    """The generated text up to the end of its first answer line (a model may go on to a new problem)."""
    match = _FIRST_ANSWER_LINE.match(text)
    return match.group(0) if match else text


def load_bucket(bucket: str, limit: int | None = None) -> list[dict]:
    path = DEFAULT_DIR / "data" / f"{bucket}.jsonl"
    if not path.exists():
        raise ValueError(f"no test set {bucket!r}; choose a file stem in {DEFAULT_DIR / 'data'}")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return records[:limit] if limit else records


@torch.no_grad()
def heldout_accuracy(model, tokenizer, bucket: str, limit: int | None = 100, batch_size: int = 32,
                     max_new_tokens: int = 96) -> dict:
    records = load_bucket(bucket, limit)
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    correct, samples = 0, []
    try:
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            encoded = tokenizer([r["prompt"] for r in batch], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(model.device)
            generated = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            outputs = tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
            for record, output in zip(batch, outputs):
                task = get_task(record["task"])
                example = Example(task=record["task"], prompt=record["prompt"], steps=[], answer=record["answer"],
                                  difficulty=record["difficulty"], template_id=record["template_id"])
                ok = task.verify(example, first_answer(output))
                correct += ok
                if len(samples) < 3:
                    samples.append({"prompt": record["prompt"], "output": first_answer(output), "correct": ok})
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    common_answer, common_count = Counter(r["answer"] for r in records).most_common(1)[0]
    return {"bucket": bucket, "examples": len(records), "accuracy": correct / max(1, len(records)),
            "most_common_answer": common_answer, "most_common_answer_accuracy": common_count / len(records),
            "solution_loss": solution_loss(model, tokenizer, records, batch_size), "samples": samples}


@torch.no_grad()
def solution_loss(model, tokenizer, records: list[dict], batch_size: int = 32) -> float:
    """Mean cross-entropy (nats/token) of the gold solutions given their prompts."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for start in range(0, len(records), batch_size):
            for record in records[start : start + batch_size]:
                prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
                solution = tokenizer(record["solution"], add_special_tokens=False)["input_ids"]
                ids = torch.tensor([prompt + solution], device=model.device)
                logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
                total += torch.nn.functional.cross_entropy(logits, ids[0, len(prompt):], reduction="sum").item()
                tokens += len(solution)
    finally:
        model.train(was_training)
    return total / max(1, tokens)
