"""A small corpus with planted cases, for the data-pipeline tests. Every planted document says what
the pipeline must do with it (`expect`), so the tests compare the build's report with these facts."""

import gzip
import json
import random
from pathlib import Path

NOUNS = (
    "farmer teacher doctor writer painter captain baker student engineer gardener sailor nurse miller "
    "weaver poet judge singer tailor hunter merchant pilot potter clerk ranger"
).split()
ADJECTIVES = "old young quiet careful tired brave patient curious honest clever gentle proud busy lonely".split()
VERBS = (
    "noticed remembered described studied questioned admired repaired visited painted measured "
    "finished followed carried watched"
).split()
THINGS = (
    "bridge market storm letter library garden road harvest harbour recipe lantern orchard fence "
    "chapel mill river boat song map clock"
).split()
PLACES = (
    "near the station",
    "behind the church",
    "across the valley",
    "in the north",
    "by the lake",
    "at the border",
    "on the hill",
    "inside the old hall",
    "along the coast",
    "under the trees",
)
TIMES = (
    "last winter",
    "every morning",
    "before dawn",
    "during the flood",
    "after the war",
    "one evening",
    "in early spring",
    "at noon",
    "some years ago",
    "late at night",
)


def sentence(rng: random.Random) -> str:
    return (
        f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(THINGS)} of the "
        f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(PLACES)} {rng.choice(TIMES)}."
    )


def prose(rng: random.Random, sentences: int = 12) -> str:
    lines = [sentence(rng) for _ in range(sentences)]
    # Paragraphs of three sentences, as real text has.
    return "\n".join(" ".join(lines[i : i + 3]) for i in range(0, len(lines), 3))


GOOD_CODE = '''"""Small helpers for working with temperatures."""


def celsius_to_fahrenheit(celsius):
    """Convert a temperature from Celsius to Fahrenheit."""
    return celsius * 9 / 5 + 32


def fahrenheit_to_celsius(fahrenheit):
    """Convert a temperature from Fahrenheit to Celsius."""
    return (fahrenheit - 32) * 5 / 9


if __name__ == "__main__":
    for value in (0, 37, 100):
        print(value, celsius_to_fahrenheit(value))
'''


def make_corpus(root: Path, eval_item: dict, good_docs: int = 12) -> dict:
    """Write the corpus under `root`; returns what the build must report about it."""
    rng = random.Random(0)
    docs = [prose(rng) for _ in range(good_docs + 1)]
    near = docs[1].split(" ")
    near[60] = "remarkably"  # one word changed: a near-duplicate of docs[1] (5-gram Jaccard ~0.95)
    contaminated = docs[2][:300] + "\n" + eval_item["prompt"] + eval_item["solution"]
    records = [{"text": d} for d in docs[:good_docs]] + [
        {"text": docs[0]},  # exact duplicate of docs[0]
        {"text": " ".join(near)},  # near duplicate of docs[1]
        {"text": "buy now " * 200},  # repetition spam
        {"text": "Too short."},  # under min_chars
        {"text": contaminated},  # shares 13-grams with a test item
    ]
    lines = [json.dumps(r) for r in records]
    lines.insert(3, '{"text": "unterminated')  # corrupt JSON: line 4
    lines.insert(5, json.dumps({"body": "no text field"}))  # missing field: line 6
    prose_dir, code_dir = root / "prose", root / "code"
    prose_dir.mkdir(parents=True)
    (prose_dir / "docs.jsonl").write_text("\n".join(lines) + "\n")
    with open(prose_dir / "bytes.jsonl", "wb") as handle:  # a good line, then invalid UTF-8 on line 2
        handle.write(json.dumps({"text": docs[good_docs]}).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    (prose_dir / "empty.txt").write_text("")
    (prose_dir / "huge.txt").write_text(prose(rng, 30) * 400)  # over max_document_chars
    # Two good lines, then the gzip stream ends early (a download cut short): both are read, the end is a skip.
    truncated_docs = [prose(rng), prose(rng)]
    body = gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in truncated_docs).encode())
    (prose_dir / "truncated.jsonl.gz").write_bytes(body[:-8])  # without the CRC and size trailer
    code_dir.mkdir()
    (code_dir / "temperature.py").write_text(GOOD_CODE)
    (code_dir / "minified.py").write_text("x=1;" * 700 + "\n")  # one 2,800-character line
    return {
        "skips": sorted(
            [
                (f"{prose_dir / 'docs.jsonl'}:4", "corrupt_json"),
                (f"{prose_dir / 'docs.jsonl'}:6", "missing_field"),
                (f"{prose_dir / 'bytes.jsonl'}:2", "invalid_utf8"),
                (f"{prose_dir / 'empty.txt'}:0", "empty_file"),
                (f"{prose_dir / 'huge.txt'}:1", "absurdly_long"),
                (f"{prose_dir / 'truncated.jsonl.gz'}:3", "corrupt_compressed"),
            ]
        ),
        "removed": {
            "exact_duplicate": 1,
            "near_duplicate": 1,
            "length:too_short": 1,
            "decontamination:contaminated": 1,
            "code:code_long_line": 1,
            "gopher_repetition": 1,
        },
        # good prose + the good line of bytes.jsonl + the two lines of truncated.jsonl.gz + temperature.py
        "corpus_documents_out": good_docs + 4,
        "good_texts": docs + truncated_docs,
    }
