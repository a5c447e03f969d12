"""The fast evaluation path (cogfm_hf.training.eval_model): generations stop at their complete answer line, the KV
cache grows by doubling, and lm-eval's task index is ours alone; none of it changes a token or a score. (The scores
of the fast path against the plain `lm_eval --model hf` CLI on one checkpoint: test_eval_tasks.py.)"""

import pytest
import torch
from transformers import AutoTokenizer, DynamicCache

from cogfm_hf import CogFMConfig, CogFMForCausalLM
from cogfm_hf.paths import EVAL_TASKS_DIR
from cogfm_hf.tasks.answers import first_answer
from cogfm_hf.training import eval_model
from cogfm_hf.training.eval_model import (
    AnswerLineComplete,
    AnswerLineHFLM,
    GrowingKeysValues,
    GrowingLayer,
    GrowingStateLayer,
    RowEnd,
    answer_line_complete,
    greedy_decode,
    growing_cache,
)
from cogfm_hf.training.evaluation import run_lm_eval, scores, task_manager
from cogfm_hf.training.run import position_coupling

from .conftest import small_config


@pytest.mark.parametrize(
    "text, complete",
    [
        ("2+2=4 write 4.\nAnswer: 4\n", True),
        ("2+2=4 write 4.\nAnswer: 4", False),  # the answer may go on: 4, 42, 421...
        ("Answer: 4\nAnswer: 5\n", True),
        ("no answer line\n\nat all\n", False),
        ("<|back|>Answer: zan\nmore", True),
    ],
)
def test_an_answer_line_is_complete_exactly_when_first_answer_can_no_longer_change(text, complete):
    assert answer_line_complete(text) is complete
    if complete:  # whatever comes next, the scored text is the same
        assert first_answer(text + "Answer: 9 and more\n") == first_answer(text)


def test_the_criterion_stops_each_row_at_the_newline_after_its_answer(pretrained):
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    model = CogFMForCausalLM.from_pretrained(pretrained)
    lm = AnswerLineHFLM(pretrained=model, tokenizer=tokenizer, batch_size=2, backend="causal")
    prompt = tokenizer("12+30=?\n")["input_ids"]
    rows = ["2+0=2 write 2.\nAnswer: 42\nAnd now", "1+3=4 write 4 and then more steps, no answer yet"]
    encoded = [tokenizer(row, add_special_tokens=False)["input_ids"] for row in rows]
    criterion = AnswerLineComplete(lm, batch_size=2)
    done_at = [None, None]
    for step in range(max(map(len, encoded))):
        # As generate() pads a finished row: with the pad token.
        ids = [prompt + (row + [tokenizer.pad_token_id] * 99)[: step + 1] for row in encoded]
        done = criterion(torch.tensor(ids), None)
        for row in range(2):
            if done[row] and done_at[row] is None:
                done_at[row] = tokenizer.decode(ids[row][len(prompt) :])
    assert done_at[0] is not None and done_at[0].endswith("Answer: 42\n"), done_at[0]
    assert done_at[1] is None


MIXERS = {
    "attention": {},
    "canon": dict(canon_set="ABCD"),
    "hybrid_and_conv": dict(layer_types=["hybrid", "conv"], mamba_d_ssm=64, mamba_d_head=16, mamba_d_state=8),
    "canon_and_mamba": dict(
        layer_types=["full_attention", "linear_attention"],
        canon_set="AB",
        mamba_d_ssm=64,
        mamba_d_head=16,
        mamba_d_state=8,
    ),
}


@pytest.mark.parametrize("mixers", MIXERS.values(), ids=MIXERS.keys())
def test_the_growing_cache_generates_the_tokens_of_the_dynamic_cache(mixers):
    config = small_config(**mixers)
    model = CogFMForCausalLM(config).eval()
    model.generation_config.pad_token_id = 0
    ids = torch.randint(3, config.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding, as lm-eval batches
    runs = {}
    for name, cache in (("dynamic", DynamicCache(config=config)), ("growing", growing_cache(config))):
        with torch.no_grad():
            out = model.generate(
                ids, attention_mask=mask, max_new_tokens=80, do_sample=False, past_key_values=cache
            )  # 89 positions: the buffer of 64 doubles on the way
        runs[name] = (out, cache)
    assert torch.equal(runs["dynamic"][0], runs["growing"][0])
    grown, dynamic = runs["growing"][1], runs["dynamic"][1]
    attention = config.layer_types.index("hybrid" if "hybrid" in config.layer_types else "full_attention")
    assert isinstance(grown.layers[attention], GrowingKeysValues)
    assert type(grown.layers[attention]) is (GrowingStateLayer if config.keeps_convolution_state else GrowingLayer)
    torch.testing.assert_close(grown.layers[attention].keys, dynamic.layers[attention].keys, rtol=0, atol=0)

    # A cache cut back (assisted decoding crops it) keeps growing correctly from what is left.
    if config.keeps_convolution_state:
        return  # transformers crops convolution states only where past recording was switched on
    grown.crop(80 - grown.get_seq_length())
    key = torch.randn(3, config.num_key_value_heads, 1, config.head_dim)
    keys, _ = grown.layers[0].update(key, key)
    assert keys.shape[-2] == 81 and torch.equal(keys[..., 80:, :], key)
    assert torch.equal(keys[..., :80, :], dynamic.layers[0].keys[..., :80, :])


def random_lm(data_dir, mixers: str, batch_size: int):
    """A random CogFM with `mixers` (a MIXERS key, or "position_coupling") on the test tokenizer, its lm-eval
    model and the tokenizer. A large init makes a random model's tokens depend on everything it is given, so a
    wrong input shows."""
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer", padding_side="left")
    special = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    fields = (
        {"position_coupling": position_coupling(tokenizer, 32)} if mixers == "position_coupling" else MIXERS[mixers]
    )
    torch.manual_seed(0)
    model = CogFMForCausalLM(small_config(**special, **fields, initializer_range=0.3, max_position_embeddings=512))
    lm = AnswerLineHFLM(pretrained=model.eval(), tokenizer=tokenizer, batch_size=batch_size, backend="causal")
    return model, lm, tokenizer


@pytest.mark.parametrize("mixers", [*MIXERS, "position_coupling"])
def test_greedy_decode_writes_what_generate_writes_and_drops_each_row_when_it_ends(data_dir, mixers):
    model, lm, tokenizer = random_lm(data_dir, mixers, batch_size=3)
    prompts = tokenizer(
        ["12+345=?\n", "7+8=?\n", "Alice has 3 apples and 40 pears.\n"], return_tensors="pt", padding=True
    )
    budgets = [41, 6, 19]
    with torch.no_grad():
        out = model.generate(**prompts, max_new_tokens=max(budgets), do_sample=False)
    rows = [RowEnd(lm, until=[], budget=budget) for budget in budgets]
    compacted = []
    reorder = DynamicCache.reorder_cache
    with pytest.MonkeyPatch.context() as patch:  # records the rows each compaction keeps; replaces nothing
        patch.setattr(
            DynamicCache,
            "reorder_cache",
            lambda cache, index: compacted.append(index.tolist()) or reorder(cache, index),
        )
        greedy_decode(model, rows, lambda indices: (prompts["input_ids"], prompts["attention_mask"]), 3, 0)
    for index, row in enumerate(rows):
        expected = out[index, prompts["input_ids"].shape[1] :].tolist()[: budgets[index]]
        if tokenizer.eos_token_id in expected:  # generate() ends a row at end of text and pads it after
            expected = expected[: expected.index(tokenizer.eos_token_id) + 1]
        assert row.tokens == expected, (mixers, index)
    assert [len(row.tokens) for row in rows] == budgets, "the test wants rows that end at their budgets"
    assert compacted == [[0, 2], [0]]  # the 6-token row left first, then the 19-token one


@pytest.mark.parametrize("mixers", [*MIXERS, "position_coupling"])
def test_waiting_rows_join_a_running_batch_and_each_row_writes_what_it_writes_alone(data_dir, mixers):
    model, lm, tokenizer = random_lm(data_dir, mixers, batch_size=2)
    # Longest prompt first, as generate_until orders them; the budgets make rows leave at different steps, so
    # later rows join a batch whose rows are longer or shorter than theirs.
    prompts = [
        "Alice has 3 apples and 40 pears, and Bob has 12.\n",
        "12+345+6789=?\n",
        "x = 3\ny = x + 4\n",
        "7+8=?\n",
        "9=?\n",
    ]
    budgets = [7, 60, 3, 30, 45]
    alone = []
    for prompt, budget in zip(prompts, budgets):
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=budget, do_sample=False)
        tokens = out[0, encoded["input_ids"].shape[1] :].tolist()
        alone.append(
            tokens[: tokens.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in tokens else tokens
        )
    taken, sizes = [], []
    step = eval_model.GreedyBatch.step

    def encode(indices):
        taken.append(indices)
        batch = tokenizer([prompts[index] for index in indices], return_tensors="pt", padding=True)
        return batch["input_ids"], batch["attention_mask"]

    rows = [RowEnd(lm, until=[], budget=budget) for budget in budgets]
    with pytest.MonkeyPatch.context() as patch:  # records each step's batch size; replaces nothing
        patch.setattr(eval_model.GreedyBatch, "step", lambda batch: sizes.append(len(batch.rows)) or step(batch))
        greedy_decode(model, rows, encode, 2, tokenizer.pad_token_id)
    assert [row.tokens for row in rows] == alone, mixers
    assert max(sizes) == 2 and taken == [[0, 1], [2], [3], [4]]  # each row joined as soon as a place was free
    assert len(sizes) < sum(budgets), "rows decoded side by side"


def test_our_tasks_are_indexed_without_lm_eval_s_own_and_its_tasks_still_resolve():
    ours = task_manager(("cogfm_all",), str(EVAL_TASKS_DIR))
    assert "cogfm_chains_op2" in ours.all_tasks and "arc_easy" not in ours.all_tasks
    assert task_manager(("cogfm_all",), str(EVAL_TASKS_DIR)) is ours  # made once per process
    assert "arc_easy" in task_manager(("cogfm_all", "arc_easy"), str(EVAL_TASKS_DIR)).all_tasks


def test_the_fast_and_the_plain_path_score_a_live_model_alike(pretrained):
    model = CogFMForCausalLM.from_pretrained(pretrained)
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    tasks = ["cogfm_addition_digits3", "cogfm_logic_self_correction", "cogfm_chains_next_step"]
    results = {
        fast: scores(run_lm_eval(model, tasks, limit=6, batch_size=4, tokenizer=tokenizer, stop_at_answer_line=fast))
        for fast in (True, False)
    }
    assert results[True].keys() == results[False].keys() and len(results[True]) > 5
    for key, value in results[True].items():
        assert value == results[False][key] or (value != value and results[False][key] != results[False][key]), key


def test_requests_of_every_task_share_batches_and_each_row_writes_what_it_writes_alone(pretrained, monkeypatch):
    model = CogFMForCausalLM.from_pretrained(pretrained)
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    tasks = ["cogfm_addition_digits3", "cogfm_addition_digits8", "cogfm_chains_op6", "cogfm_code_stmts2"]
    batches = []
    decode = eval_model.greedy_decode

    def recording(model, rows, *args):  # what each call was asked to decode; nothing replaced
        batches.append(sorted({(row.budget, tuple(row.until)) for row in rows}))
        return decode(model, rows, *args)

    monkeypatch.setattr(eval_model, "greedy_decode", recording)
    fast = run_lm_eval(model, tasks, limit=3, batch_size=32, tokenizer=tokenizer)
    plain = run_lm_eval(model, tasks, limit=3, batch_size=32, tokenizer=tokenizer, stop_at_answer_line=False)
    assert len(batches) == 1 and [budget for budget, _ in batches[0]] == [122, 132, 154, 266]
    for task in tasks:
        alone = {sample["doc_id"]: sample for sample in plain["samples"][task]}
        for sample in fast["samples"][task]:
            # The plain path generated each row in a batch of its task alone, up to its own budget; here the row
            # wrote the same tokens and stopped at its answer line, an `until` string or its budget.
            written, full = sample["resps"][0][0], alone[sample["doc_id"]]["resps"][0][0]
            assert full.startswith(written), (task, written, full)
            assert sample["filtered_resps"] == alone[sample["doc_id"]]["filtered_resps"]
    assert scores(fast) == scores(plain)


@pytest.mark.parametrize("mixers", [MIXERS["canon"], MIXERS["hybrid_and_conv"]], ids=["canon", "hybrid_and_conv"])
def test_models_with_other_mixers_evaluate_on_the_fast_path_as_on_the_plain_one(pretrained, mixers):
    trained = CogFMConfig.from_pretrained(pretrained)
    special = {key: getattr(trained, key) for key in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")}
    config = small_config(**special, **mixers, max_position_embeddings=1024)
    torch.manual_seed(0)
    model = CogFMForCausalLM(config)
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    tasks = ["cogfm_addition_digits3", "cogfm_chains_next_step"]
    results = {
        fast: run_lm_eval(model, tasks, limit=3, batch_size=4, tokenizer=tokenizer, stop_at_answer_line=fast)
        for fast in (True, False)
    }
    assert all(len(samples) == 3 for samples in results[True]["samples"].values())
    assert scores(results[True]) == scores(results[False])
