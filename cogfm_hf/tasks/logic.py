"""Propositional deduction: facts and if-then rules; which of two propositions can be derived?

Format:

    Facts: zup, mek, lor. Rules: if zup and mek then dax. if dax then rof. if kel then tiv. if lor then sem.
    Which holds, tiv or rof?
    dax from zup, mek.
    rof from dax.
    Answer: rof

The true option sits at the end of a proof of `depth` rule applications; the other option is the
conclusion of a decoy chain whose first premise is never established (no fact, no rule), so it does
not hold. Guessing scores 50%; the proof is the forward chain that reaches the answer. Knobs: depth,
distractor_rules (rules whose conclusions are never asked about), max_premises, max_rules (caps the
prompt by dropping distractors, as the chains task does).
"""

from __future__ import annotations

import random
import re

from .base import Example, ReasoningTask, check_range, draw, template_id

SYLLABLE_ONSETS = "bdfgklmnprstvz"
SYLLABLE_VOWELS = "aeiou"
SYLLABLE_CODAS = "bdgklmnprstx"
WORDS = [o + v + c for o in SYLLABLE_ONSETS for v in SYLLABLE_VOWELS for c in SYLLABLE_CODAS]


class LogicTask(ReasoningTask):
    name = "logic"
    difficulty_knob = "depth"
    default_knobs = dict(depth=3, distractor_rules=(0, 10), max_premises=2, max_rules=None)
    train_knobs = dict(depth=(1, 4))
    buckets = {
        **{f"depth{k}": ("id", dict(depth=k)) for k in (2, 3, 4)},  # depth 1 has only 2 templates
        **{f"depth{k}": ("ood", dict(depth=k, max_rules=14)) for k in (6, 8)},
    }
    answer_pattern = r"[a-z]{3}"

    def check_knobs(self, knobs):
        knobs["depth"] = check_range(self.name, "depth", knobs["depth"], 1)
        knobs["distractor_rules"] = check_range(self.name, "distractor_rules", knobs["distractor_rules"], 0)
        if not isinstance(knobs["max_premises"], int) or knobs["max_premises"] < 1:
            raise ValueError(
                f"{self.name}: knob 'max_premises' must be an integer >= 1, got {knobs['max_premises']!r}"
            )
        if knobs["max_rules"] is not None and knobs["max_rules"] < 1:
            raise ValueError(f"{self.name}: knob 'max_rules' must be >= 1 or None, got {knobs['max_rules']!r}")

    def sample(self, rng: random.Random, knobs: dict) -> Example:
        depth = draw(rng, knobs["depth"])
        words = iter(rng.sample(WORDS, len(WORDS)))
        facts: list[str] = []
        rules: list[tuple[list[str], str]] = []
        proof: list[tuple[list[str], str]] = []
        shape = []

        def premises_for(previous: str | None, known: list[str]) -> list[str]:
            count = rng.randint(1, knobs["max_premises"])
            chosen = [previous] if previous else []
            while len(chosen) < count:
                pool = [w for w in known if w not in chosen]
                if pool and rng.random() < 0.4:
                    chosen.append(rng.choice(pool))
                else:
                    facts.append(next(words))
                    chosen.append(facts[-1])
            return chosen

        conclusion = None
        for _ in range(depth):
            premises = premises_for(conclusion, facts + [r[1] for r in proof])
            conclusion = next(words)
            proof.append((premises, conclusion))
            derived = {c: i for i, (_, c) in enumerate(proof)}
            shape.append(",".join(f"d{derived[p]}" if p in derived else "f" for p in premises))
        rules += proof

        # Decoy: a chain whose first premise nothing establishes.
        missing = next(words)
        decoy_conclusion = missing
        for _ in range(rng.randint(1, depth)):
            premises = [decoy_conclusion] + rng.sample(
                facts, min(len(facts), rng.randint(0, knobs["max_premises"] - 1))
            )
            decoy_conclusion = next(words)
            rules.append((premises, decoy_conclusion))

        n_distractors = draw(rng, knobs["distractor_rules"])
        if knobs["max_rules"] is not None:
            n_distractors = max(0, min(n_distractors, knobs["max_rules"] - len(rules)))
        known_words = facts + [c for _, c in rules]
        for _ in range(n_distractors):
            premises = rng.sample(known_words, min(len(known_words), rng.randint(1, knobs["max_premises"])))
            rules.append((premises, next(words)))

        rng.shuffle(facts)
        rng.shuffle(rules)
        options = [conclusion, decoy_conclusion]
        rng.shuffle(options)
        rule_text = " ".join(f"if {' and '.join(p)} then {c}." for p, c in rules)
        prompt = f"Facts: {', '.join(facts)}. Rules: {rule_text}\nWhich holds, {options[0]} or {options[1]}?\n"
        steps = [f"{c} from {', '.join(p)}.\n" for p, c in proof]
        return Example(
            task=self.name,
            prompt=prompt,
            steps=steps,
            answer=conclusion,
            difficulty=depth,
            template_id=template_id("logic|" + "|".join(shape)),
            meta=dict(
                heads=[f"{c} from" for _, c in proof],
                facts=facts,
                rules=[[p, c] for p, c in rules],
                proof_order=[c for _, c in proof],
            ),
        )

    def answer_candidates(self, prompt):
        match = re.search(r"Which holds, ([a-z]+) or ([a-z]+)\?", prompt)
        return list(match.groups()) if match else None

    def mistake(self, example, step_index, rng):
        # An unsupported conclusion: a rule whose premises are not all established yet.
        established = set(example.meta["facts"]) | set(example.meta["proof_order"][:step_index])
        unsupported = [c for p, c in example.meta["rules"] if c not in established and not set(p) <= established]
        return f"{rng.choice(sorted(unsupported))} from" if unsupported else None
