"""In-context rule induction: each example has its own hidden rule, shows k input -> output pairs of it, and asks
for one more input's output. A rule is a template: 20% of rules are held out, so the test sets ask about rules no
training example has used, and only what the prompt shows can answer them (the meta-learning the tasks measure).

Two families. `rules_map`: a rule maps each of eight words to a digit; the query is one of the shown words with
probability `burstiness` (Chan et al., arXiv 2205.05055: what decides between learning in context and in weights),
else a word not shown, which only a memorised rule answers. A held-out rule is answerable only when its query is
shown, so its test sets show it (burstiness 1):

    Examples: dax -> 7, mek -> 2, lor -> 7.
    Query: mek -> ?
    mek -> 2
    Answer: 2

`rules_mod`: a rule is y = a*x + b mod p (He et al., arXiv 2406.02550); the query is a new x (burstiness: the chance
that it is one of the shown ones), so two shown pairs determine the rule and the solution writes it out:

    Examples: 3 -> 8, 5 -> 1, 0 -> 5.
    Query: 7 -> ?
    y = 3x+5 mod 11
    3*7+5 = 26 = 4
    Answer: 4

Knobs: k (the difficulty: pairs shown), rules (how many distinct training rules there are; None: every training
rule, a new one for nearly every example), burstiness, and for `rules_mod` the modulus. Test sets by k hold 0, 1,
2, 4 and 8 pairs inside the prompt (not lm-eval's `num_fewshot`): k = 0 is the floor, answerable by no rule.
"""

from __future__ import annotations

import functools
import random
import re

from .base import Example, ReasoningTask, check_range, draw, is_held_out, seeded_rng, template_id
from .logic import WORDS

MAP_INPUTS = 8  # words per mapping rule: k up to 8 shows all of them
TRAIN_K = (1, 8)
TEST_K = (0, 1, 2, 4, 8)


def k_buckets(burstiness: float) -> dict[str, tuple[str, dict]]:
    """A test set per k; k = 0 is not trained (no pair identifies a rule): the floor every k is read against."""
    return {f"k{k}": ("id" if k >= TRAIN_K[0] else "ood", dict(k=k, burstiness=burstiness)) for k in TEST_K}


class RuleInductionTask(ReasoningTask):
    """What the two families share: the knobs, the rule list behind `rules`, the examples line, the buckets."""

    difficulty_knob = "k"
    train_knobs = dict(k=TRAIN_K)
    answer_pattern = r"\d+"
    rule_knobs: tuple[str, ...] = ()  # the knobs a rule is drawn from (its key names them)
    question_determines_template = False  # "Examples: none. Query: 9 -> ?" is asked of every rule

    def max_k(self, knobs: dict) -> int:
        raise NotImplementedError

    def random_rule(self, rng: random.Random, knobs: dict) -> tuple:
        raise NotImplementedError

    def rule_key(self, rule: tuple, knobs: dict) -> str:
        raise NotImplementedError

    def check_knobs(self, knobs):
        knobs["k"] = check_range(self.name, "k", knobs["k"], 0)
        if knobs["k"][1] > self.max_k(knobs):
            raise ValueError(f"{self.name}: knob 'k' must be <= {self.max_k(knobs)} (the inputs a rule has)")
        burstiness = knobs["burstiness"]
        if isinstance(burstiness, bool) or not isinstance(burstiness, (int, float)) or not 0 <= burstiness <= 1:
            raise ValueError(f"{self.name}: knob 'burstiness' must be a number in [0, 1], got {burstiness!r}")
        rules = knobs["rules"]
        if rules is not None and (isinstance(rules, bool) or not isinstance(rules, int) or rules < 1):
            raise ValueError(f"{self.name}: knob 'rules' must be a positive integer or None, got {rules!r}")
        if rules is not None:
            self.training_rules(rules, **{k: v for k, v in knobs.items() if k in self.rule_knobs})

    @functools.cache
    def training_rules(self, count: int, **rule_knobs) -> tuple[tuple, ...]:
        """The first `count` training (not held-out) rules of a fixed stream: the same for every seed and run, so
        `rules: 16` means the same 16 rules in every arm that asks for them."""
        rng, rules, seen = seeded_rng(self.name, "training rules", *sorted(rule_knobs.items())), [], set()
        for _ in range(200 * count + 10_000):
            rule = self.random_rule(rng, rule_knobs)
            key = self.rule_key(rule, rule_knobs)
            if key not in seen and not is_held_out(template_id(key)):
                seen.add(key)
                rules.append(rule)
                if len(rules) == count:
                    return tuple(rules)
        raise ValueError(f"{self.name}: knob 'rules' asks for {count} training rules; only {len(rules)} exist")

    def draw_rule(self, rng: random.Random, knobs: dict) -> tuple:
        if knobs["rules"] is None:
            return self.random_rule(rng, knobs)
        return rng.choice(self.training_rules(knobs["rules"], **{k: knobs[k] for k in self.rule_knobs}))

    def draw_pairs(self, rng: random.Random, knobs: dict, inputs: list) -> tuple[list, object, int]:
        """k shown inputs and the query: one of them with probability `burstiness` (k > 0), else a new one."""
        k = draw(rng, knobs["k"])
        order = rng.sample(inputs, len(inputs))
        shown = order[:k]
        shown_query = k > 0 and (rng.random() < knobs["burstiness"] or k == len(inputs))
        query = rng.choice(shown) if shown_query else order[k]
        return shown, query, k

    @staticmethod
    def examples_line(pairs: list[tuple[str, str]]) -> str:
        return "Examples: " + (", ".join(f"{x} -> {y}" for x, y in pairs) if pairs else "none") + ".\n"

    def mistake(self, example, step_index, rng):
        # A wrong value where the step writes its result: the shown pair of another input, or a wrong rule.
        start, end = example.meta["results"][step_index]
        value = example.steps[step_index][start:end]
        wrong = [str(v) for v in range(self.answer_range(example)) if str(v) != value]
        return example.meta["heads"][step_index] + rng.choice(wrong)

    def answer_range(self, example: Example) -> int:
        raise NotImplementedError

    def guess_accuracy(self, prompt: str, answer: str) -> float:
        """How often a guess that does not use the rule is right on this item: what a model scores before it learns
        the lookup (rules_map: any shown output, uniformly; rules_mod: any residue)."""
        raise NotImplementedError


class MappingRulesTask(RuleInductionTask):
    name = "rules_map"
    default_knobs = dict(k=3, rules=None, burstiness=0.9)
    buckets = k_buckets(burstiness=1.0)  # a held-out rule answers only a shown word

    def max_k(self, knobs):
        return MAP_INPUTS

    def random_rule(self, rng, knobs):
        words = tuple(sorted(rng.sample(WORDS, MAP_INPUTS)))
        return tuple((word, rng.randrange(10)) for word in words)

    def rule_key(self, rule, knobs):
        return "rules_map|" + ",".join(f"{w}{d}" for w, d in rule)

    def sample(self, rng, knobs):
        rule = self.draw_rule(rng, knobs)
        mapping = dict(rule)
        shown, query, k = self.draw_pairs(rng, knobs, list(mapping))
        answer = str(mapping[query])
        prompt = self.examples_line([(x, mapping[x]) for x in shown]) + f"Query: {query} -> ?\n"
        head = f"{query} -> "
        return Example(
            task=self.name,
            prompt=prompt,
            steps=[head + answer + "\n"],
            answer=answer,
            difficulty=k,
            template_id=template_id(self.rule_key(rule, knobs)),
            meta=dict(heads=[head], results=[[len(head), len(head) + 1]], shown=query in shown),
        )

    def answer_range(self, example):
        return 10

    def guess_accuracy(self, prompt, answer):
        outputs = re.findall(r"-> (\d+)", prompt.split("\n")[0])
        return outputs.count(answer) / len(outputs) if outputs else 1 / 10


class ModularRulesTask(RuleInductionTask):
    name = "rules_mod"
    default_knobs = dict(k=3, rules=None, burstiness=0.0, modulus=11)
    rule_knobs = ("modulus",)
    buckets = k_buckets(burstiness=0.0)  # a new x: the rule must be inferred, not a shown pair copied

    def check_knobs(self, knobs):
        modulus = knobs["modulus"]
        if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 3:
            raise ValueError(f"{self.name}: knob 'modulus' must be an integer >= 3, got {modulus!r}")
        if any(modulus % d == 0 for d in range(2, int(modulus**0.5) + 1)):
            raise ValueError(f"{self.name}: knob 'modulus' must be prime (every a then has an inverse), got {modulus}")
        super().check_knobs(knobs)

    def max_k(self, knobs):
        return knobs["modulus"] - 1  # one x is left to ask about

    def random_rule(self, rng, knobs):
        return rng.randrange(1, knobs["modulus"]), rng.randrange(knobs["modulus"])

    def rule_key(self, rule, knobs):
        return f"rules_mod|{knobs['modulus']}|{rule[0]}|{rule[1]}"

    def sample(self, rng, knobs):
        (a, b), p = self.draw_rule(rng, knobs), knobs["modulus"]
        shown, x, k = self.draw_pairs(rng, knobs, list(range(p)))
        total = a * x + b
        answer = str(total % p)
        rule_head, value_head = "y = ", f"{a}*{x}+{b} = {total} = "
        steps = [f"{rule_head}{a}x+{b} mod {p}\n", f"{value_head}{answer}\n"]
        return Example(
            task=self.name,
            prompt=self.examples_line([(s, (a * s + b) % p) for s in shown]) + f"Query: {x} -> ?\n",
            steps=steps,
            answer=answer,
            difficulty=k,
            template_id=template_id(self.rule_key((a, b), knobs)),
            meta=dict(
                heads=[rule_head, value_head],
                results=[[len(rule_head), len(rule_head) + len(str(a))], [len(value_head), len(steps[1]) - 1]],
                rule=[a, b],
            ),
        )

    def answer_range(self, example):
        return int(example.steps[0].split("mod ")[1])

    def guess_accuracy(self, prompt, answer):
        return 1 / self.default_knobs["modulus"]  # the test sets' modulus
