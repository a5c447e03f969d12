"""On-policy self-correction mistakes: wrong starts of steps sampled from a trained model's own distribution.

A synthetic (`real`) mistake is the task's guess at an error (for arithmetic: one result digit wrong). An
on-policy mistake is what a model writes. Teacher-forced on the clean solution, the model writes step k token by
token; the mistake is the step up to and including the first token whose text leaves the right text. Sampling it
needs one forward pass: with q_t the model's probability of a token that keeps to the right text at token t of
the step, the first departure is at t with probability proportional to q_1 ... q_{t-1} (1 - q_t), and the wrong
token is then drawn from the model's distribution at t restricted to tokens that leave the right text. That is the
model's error distribution conditioned on erring at this step: arXiv 2512.02389 finds that errors injected by a
rule miss it, and that models taught on such errors then fail to correct their own. Where the model puts no
probability on any departure the step gets no mistake. Two approximations, both stated in docs/tasks.md: the model
is teacher-forced on the clean prefix (a solution's earlier retries are not in its context), and special tokens
(end of text, the BACK marker) are never sampled as the wrong token.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from pathlib import Path

from .base import Example

# Below this probability of leaving the right text anywhere in a step, the step gets no mistake: the rest is
# floating-point noise of a softmax, not an error the model makes.
MIN_ERROR_MASS = 1e-9


class ModelMistakes:
    """Mistakes drawn from the model saved at `checkpoint` (a CogFM checkpoint with its tokenizer)."""

    def __init__(self, checkpoint: str | Path):
        checkpoint = Path(checkpoint)
        if not (checkpoint / "config.json").is_file() or not (checkpoint / "tokenizer.json").is_file():
            raise ValueError(
                f"retry_model {checkpoint}: not a checkpoint with its tokenizer (config.json and tokenizer.json); "
                "give the folder of a saved CogFM run"
            )
        self.checkpoint = checkpoint
        self.model = None  # loaded on the first mistake: a recipe's validation builds mixtures without drawing
        self._cached: tuple[str, object, list] | None = None

    def _load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import cogfm_hf  # noqa: F401  (registers CogFM with the Auto classes)

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(self.checkpoint, dtype=torch.float32).eval()
        vocabulary = len(self.tokenizer)
        self.token_text = [self.tokenizer.decode([i]) for i in range(vocabulary)]
        self.ids_of_text: dict[str, list[int]] = {}
        for token_id, text in enumerate(self.token_text):
            self.ids_of_text.setdefault(text, []).append(token_id)
        self.longest_token = max(len(t) for t in self.token_text)
        never = set(self.tokenizer.all_special_ids) | {self.tokenizer.convert_tokens_to_ids("<|back|>")}
        self.allowed = torch.ones(vocabulary, dtype=torch.bool)
        self.allowed[sorted(never)] = False

    def _forward(self, example: Example):
        """Next-token probabilities over the clean text and each token's character offsets (cached per example)."""
        self._load()
        text = example.prompt + example.clean_solution()
        if self._cached is None or self._cached[0] != text:
            encoded = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
            input_ids = self.torch.tensor([encoded["input_ids"]])
            with self.torch.no_grad():
                logits = self.model(input_ids=input_ids).logits[0].float()
            probabilities = logits.softmax(-1) * self.allowed
            self._cached = (text, probabilities, encoded["offset_mapping"])
        return self._cached

    def keeps_to(self, remaining: str) -> list[int]:
        """The tokens whose text is a prefix of `remaining` (writing one of them has not left the right text)."""
        self._load()
        return [i for n in range(1, self.longest_token + 1) for i in self.ids_of_text.get(remaining[:n], [])]

    def mistake(self, example: Example, step_index: int, rng) -> str | None:
        """A wrong start of step `step_index` drawn from the model (see the module docstring), or None."""
        text, probabilities, offsets = self._forward(example)
        start = len(example.prompt) + sum(len(step) for step in example.steps[:step_index])
        end = start + len(example.steps[step_index])
        positions = [t for t, (first, _) in enumerate(offsets) if start <= first < end and t > 0]
        keep_mass, leave_masses = [], []
        for t in positions:
            row = probabilities[t - 1]  # the prediction of token t
            kept = self.keeps_to(text[offsets[t][0] :])
            keep = float(row[kept].sum())
            keep_mass.append(keep)
            leave_masses.append(max(float(row.sum()) - keep, 0.0))
        weights, reached = [], 1.0
        for keep, leave in zip(keep_mass, leave_masses):
            total = keep + leave
            weights.append(reached * (leave / total if total > 0 else 0.0))
            reached *= keep / total if total > 0 else 0.0
        if sum(weights) < MIN_ERROR_MASS:
            return None
        t = rng.choices(positions, weights=weights)[0]
        row = probabilities[t - 1].clone()
        row[self.keeps_to(text[offsets[t][0] :])] = 0.0
        token = rng.choices(range(row.shape[0]), weights=row.tolist())[0]
        return text[start : offsets[t][0]] + self.token_text[token]


@functools.cache
def model_mistakes_of(checkpoint: str) -> ModelMistakes:
    """One ModelMistakes per checkpoint and process: a data build makes a mixture per unit of work, and each would
    otherwise load the model again."""
    return ModelMistakes(checkpoint)


def where_it_leaves(example: Example, step_index: int, mistake: str) -> str:
    """Where a mistake leaves the right step: in the step's head, its written result, or after it (tasks whose
    steps record their result span, `meta["results"]`); "step" for the others."""
    step = example.steps[step_index]
    first_wrong = next((i for i, (a, b) in enumerate(zip(mistake, step)) if a != b), min(len(mistake), len(step)))
    results = example.meta.get("results")
    if not results:
        return "step"
    start, end = results[step_index]
    return "head" if first_wrong < start else "result" if first_wrong < end else "after the result"


def mistake_kinds(task, draw_mistake, examples: int, seed: int, knobs: dict) -> Counter:
    """How `draw_mistake(example, step_index, rng)` leaves the right text, over one random step of each of
    `examples` training problems ("none": no mistake drawn)."""
    rng = random.Random(seed)
    kinds: Counter = Counter()
    generator = task.generate(seed, "train", **knobs)
    for _ in range(examples):
        example = next(generator)
        index = rng.randrange(len(example.steps))
        mistake = draw_mistake(example, index, rng)
        kinds["none" if mistake is None else where_it_leaves(example, index, mistake)] += 1
    return kinds
