"""Tokenise documents and pack them into fixed-length sequences (one Arrow shard per pipeline rank).

Each document becomes its tokens + EOS; a document longer than a sequence is cut into sequence-sized
chunks. Chunks are placed first-fit into a few open sequences (of the same difficulty when grouping is
on, so each sequence has one difficulty for the curriculum) and never split, so every boundary is a
real one. Per token we keep:

- `input_ids`; `position_ids`, restarting at 0 at each document (training can mask attention per document);
- `attention_mask`, 0 on padding at the end of a sequence;
- `error_mask`, 1 on tokens inside a retry mistake's character span;
- `task_ids` (index into TASK_VOCAB) and `difficulties`.

Per sequence: `difficulty`, `task` (the most frequent one) and `num_documents`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, Sequence, Value, concatenate_datasets, load_from_disk
from datatrove.pipeline.base import PipelineStep

from ..tasks import TASKS

TASK_VOCAB = ["corpus", *TASKS]  # per-token task ids; "corpus" = any non-generated text
OPEN_SEQUENCES = 8  # per difficulty group: more means less padding, but more memory and reordering


def packed_features(seq_len: int) -> Features:
    per_token = lambda dtype: Sequence(Value(dtype), length=seq_len)  # noqa: E731
    return Features(
        {
            "input_ids": per_token("int32"),
            "position_ids": per_token("int32"),
            "attention_mask": per_token("int8"),
            "error_mask": per_token("int8"),
            "task_ids": per_token("int8"),
            "difficulties": per_token("int16"),
            "difficulty": Value("int16"),
            "task": Value("string"),
            "num_documents": Value("int32"),
        }
    )


def error_mask_for(offsets: list[tuple[int, int]], spans: list[list[int]]) -> list[int]:
    """1 for each token whose characters overlap a span."""
    mask = []
    for start, end in offsets:
        mask.append(int(any(start < span_end and end > span_start for span_start, span_end in spans)))
    return mask


class _Sequence:
    def __init__(self):
        self.columns = {k: [] for k in ("input_ids", "position_ids", "error_mask", "task_ids", "difficulties")}
        self.documents = 0

    def __len__(self):
        return len(self.columns["input_ids"])

    def add(self, ids, errors, task_id, difficulty):
        self.columns["input_ids"] += ids
        self.columns["position_ids"] += range(len(ids))
        self.columns["error_mask"] += errors
        self.columns["task_ids"] += [task_id] * len(ids)
        self.columns["difficulties"] += [difficulty] * len(ids)
        self.documents += 1


class PackTokens(PipelineStep):
    name = "📦 tokenise + pack"
    type = "🔢 - TOKENIZER"

    def __init__(
        self, tokenizer_dir: str, output_dir: str, seq_len: int, group_by_difficulty: bool, batch_size: int = 256
    ):
        super().__init__()
        self.tokenizer_dir, self.output_dir = tokenizer_dir, output_dir
        self.seq_len, self.group_by_difficulty, self.batch_size = seq_len, group_by_difficulty, batch_size

    def run(self, data, rank: int = 0, world_size: int = 1):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.finished: list[tuple[_Sequence, int]] = []
        self.open: dict[int, list[_Sequence]] = {}
        self.counts = {
            "documents": 0,
            "tokens": 0,
            "tokens_by_source": Counter(),
            "tokens_by_task": Counter(),
            "documents_by_source": Counter(),
            "error_tokens": 0,
            "chunked_documents": 0,
        }
        batch = []
        for doc in data:
            batch.append(doc)
            if len(batch) == self.batch_size:
                self.pack_batch(tokenizer, batch)
                batch = []
        if batch:
            self.pack_batch(tokenizer, batch)
        for group, sequences in self.open.items():
            self.finished += [(s, group) for s in sequences if len(s)]
        self.write(rank)
        return
        yield  # a generator that consumes its input and yields nothing, like datatrove's writers

    def pack_batch(self, tokenizer, docs):
        encoded = tokenizer([d.text for d in docs], add_special_tokens=False, return_offsets_mapping=True)
        for doc, ids, offsets in zip(docs, encoded["input_ids"], encoded["offset_mapping"]):
            metadata = doc.metadata
            errors = error_mask_for(offsets, metadata.get("error_spans") or [])
            ids, errors = ids + [self.eos], errors + [0]
            task_id = TASK_VOCAB.index(metadata["task"]) if metadata.get("task") in TASK_VOCAB else 0
            difficulty = int(metadata.get("difficulty") or 0)
            group = difficulty if self.group_by_difficulty else 0
            if len(ids) > self.seq_len:
                self.counts["chunked_documents"] += 1
            for start in range(0, len(ids), self.seq_len):
                self.place(
                    ids[start : start + self.seq_len], errors[start : start + self.seq_len], task_id, difficulty, group
                )
            source = metadata.get("source", "?")
            self.counts["documents"] += 1
            self.counts["tokens"] += len(ids)
            self.counts["error_tokens"] += sum(errors)
            self.counts["tokens_by_source"][source] += len(ids)
            self.counts["documents_by_source"][source] += 1
            self.counts["tokens_by_task"][TASK_VOCAB[task_id]] += len(ids)
            self.stat_update("tokens", value=len(ids))

    def place(self, ids, errors, task_id, difficulty, group):
        sequences = self.open.setdefault(group, [])
        for sequence in sequences:
            if len(sequence) + len(ids) <= self.seq_len:
                sequence.add(ids, errors, task_id, difficulty)
                return
        if len(sequences) == OPEN_SEQUENCES:  # retire the fullest to make room
            fullest = max(sequences, key=len)
            sequences.remove(fullest)
            self.finished.append((fullest, group))
        sequence = _Sequence()
        sequence.add(ids, errors, task_id, difficulty)
        sequences.append(sequence)

    def write(self, rank: int):
        rows = {name: [] for name in packed_features(self.seq_len)}
        for sequence, group in self.finished:
            padding = self.seq_len - len(sequence)
            columns = sequence.columns
            rows["input_ids"].append(columns["input_ids"] + [self.pad] * padding)
            rows["position_ids"].append(columns["position_ids"] + [0] * padding)
            rows["attention_mask"].append([1] * len(sequence) + [0] * padding)
            rows["error_mask"].append(columns["error_mask"] + [0] * padding)
            rows["task_ids"].append(columns["task_ids"] + [0] * padding)
            rows["difficulties"].append(columns["difficulties"] + [0] * padding)
            rows["difficulty"].append(group)
            rows["task"].append(TASK_VOCAB[Counter(columns["task_ids"]).most_common(1)[0][0]])
            rows["num_documents"].append(sequence.documents)
        self.counts["sequences"] = len(rows["input_ids"])
        self.counts["padding_tokens"] = int(sum(len(m) - sum(m) for m in rows["attention_mask"]))
        shard = Path(self.output_dir) / f"shard-{rank:05d}"
        Dataset.from_dict(rows, features=packed_features(self.seq_len)).save_to_disk(str(shard))
        (Path(self.output_dir) / f"stats-{rank:05d}.json").write_text(json.dumps(self.counts, indent=1))


def load_packed(directory) -> Dataset:
    """All shards of a packed directory (`<build>/packed`) as one Dataset, in shard order."""
    shards = sorted(Path(directory).glob("shard-*"))
    if not shards:
        raise FileNotFoundError(f"{directory}: no packed shards (shard-*) found; run `python -m cogfm_hf.data build`")
    return concatenate_datasets([load_from_disk(str(s)) for s in shards])


def unpack_documents(row: dict) -> list[np.ndarray]:
    """The documents (token arrays) in a packed row, split at position resets; padding dropped."""
    ids = np.asarray(row["input_ids"])[np.asarray(row["attention_mask"]) == 1]
    positions = np.asarray(row["position_ids"])[: len(ids)]
    starts = list(np.flatnonzero(positions == 0)) + [len(ids)]
    return [ids[a:b] for a, b in zip(starts, starts[1:])]
