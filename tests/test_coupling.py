"""Position coupling: RoPE places computed from the tokens (coupling_cogfm.py), the same in a packed training row, in
generate() and through the lm-eval CLI, on the `order: lsd` addition format and a real tokenizer."""

import json
import random

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from cogfm_hf import CogFMConfig, CogFMForCausalLM
from cogfm_hf.config import RecipeError
from cogfm_hf.modeling.coupling_cogfm import coupled_places, document_starts
from cogfm_hf.paths import EVAL_TASKS_DIR
from cogfm_hf.tasks import BACK, TASKS, add_retries
from cogfm_hf.training.recipe import TrainRecipe
from cogfm_hf.training.run import position_coupling

from .conftest import run_isolated_python, small_config, tiny_recipe

STRIDE = 32


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return AutoTokenizer.from_pretrained(data_dir / "tokenizer")


@pytest.fixture(scope="module")
def coupling(tokenizer):
    return position_coupling(tokenizer, STRIDE)


def lsd_problem(seed: int, digits: int):
    return next(TASKS["addition_lsd"].generate(seed, digits=digits))


def coupled_model(tokenizer, coupling, **overrides) -> CogFMForCausalLM:
    # A large init makes a random model's outputs depend on where it places tokens, so a wrong place shows.
    fields = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    fields.update(bos_token_id=tokenizer.bos_token_id, position_coupling=coupling, initializer_range=0.3)
    fields.update(max_position_embeddings=1024)  # lm-eval refuses a generation longer than this
    return CogFMForCausalLM(small_config(**{**fields, **overrides})).eval()


def packed_row(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """One packed training row of `texts` (each ends with EOS): input ids, restarting position ids, and each
    document's (start, end)."""
    row, positions, spans = [], [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        spans.append((len(row), len(row) + len(ids)))
        row += ids
        positions += range(len(ids))
    return torch.tensor([row]), torch.tensor([positions]), spans


def test_the_lsd_format_writes_the_same_problems_reversed():
    for seed, digits in ((0, 5), (3, 8), (7, 16)):
        plain, reversed_ = next(TASKS["addition"].generate(seed, digits=digits)), lsd_problem(seed, digits)
        a, b = plain.prompt.removesuffix("=?\n").split("+")
        assert reversed_.prompt == f"{a[::-1]}+{b[::-1]}=?\n" and reversed_.answer == plain.answer[::-1]
        assert reversed_.steps == plain.steps and reversed_.template_id == plain.template_id
    with pytest.raises(ValueError, match="order 'lsd' is written for the column-by-column operations"):
        TASKS["arithmetic"].knobs(order="lsd", operation="*")


def test_coupled_ids_of_a_packed_row_are_what_the_format_promises(tokenizer, coupling):
    documents = [lsd_problem(0, 6), lsd_problem(1, 3), lsd_problem(2, 4)]
    input_ids, position_ids, spans = packed_row(tokenizer, [document.text for document in documents])
    coupled = coupled_places(input_ids, coupling, document_starts(input_ids.shape, "cpu", position_ids)).ids[0]

    for document, (start, end) in zip(documents, spans):
        alone = input_ids[:, start:end]
        # Per document: the same ids as the document alone; and causal: a prefix's ids are a prefix of the ids.
        assert (
            coupled[start:end].tolist()
            == coupled_places(alone, coupling, document_starts(alone.shape, "cpu")).ids[0].tolist()
        )
        for length in range(1, end - start):
            prefix = alone[:, :length]
            assert (
                coupled_places(prefix, coupling, document_starts(prefix.shape, "cpu")).ids[0].tolist()
                == coupled[start : start + length].tolist()
            )

        texts = [tokenizer.decode([token]) for token in input_ids[0, start:end].tolist()]
        ids = coupled[start:end].tolist()
        lines, line = [[]], 0
        for text, place in zip(texts, ids):
            if text == "\n":
                line += 1
                lines.append([])
            lines[line].append((text, place))
        a, b = document.prompt.removesuffix("=?\n").split("+")
        prompt_digits = [place for text, place in lines[0] if text.isdigit()]
        # Same significance, same column: operand digit k of a and of b, step line k and answer digit k.
        assert prompt_digits == [STRIDE * k for k in range(len(a))] + [STRIDE * k + 1 for k in range(len(b))]
        for column, step in enumerate(lines[1 : 1 + len(document.steps)]):
            assert [place for _, place in step] == [STRIDE * column + slot for slot in range(len(step))]
        answer = lines[1 + len(document.steps)]
        assert "".join(text for text, _ in answer).strip() == f"Answer: {document.answer}"
        assert [place for text, place in answer if text.isdigit()] == [STRIDE * k for k in range(len(document.answer))]
        assert {place for text, place in answer[1:] if not text.isdigit()} == {STRIDE - 1}


def test_training_moves_each_documents_columns_by_a_random_gap_and_offset_and_evaluation_does_not(tokenizer, coupling):
    """`train_column_gap` G and `train_column_offset` O: in training each document of a packed row puts column c at
    `stride * (c * gap + offset)`, one gap in 1..G and one offset in 0..O per document, drawn afresh; the tokens
    that are not digits or step lines stay at `stride - 1`; in evaluation gap 1 and offset 0, the plain ids."""
    spread = {**coupling, "train_column_gap": 3, "train_column_offset": 5}
    model = coupled_model(tokenizer, spread)
    documents = [lsd_problem(seed, digits) for seed, digits in enumerate((6, 3, 4, 5, 2, 7, 4, 3))]
    input_ids, position_ids, spans = packed_row(tokenizer, [document.text for document in documents])
    plain = coupled_places(input_ids, coupling, document_starts(input_ids.shape, "cpu", position_ids)).ids[0]
    assert torch.equal(model.model.coupled_positions(input_ids, position_ids, None, None).ids[0], plain)

    model.train()
    drawn = set()
    for seed in range(4):
        torch.manual_seed(seed)
        placed = model.model.coupled_positions(input_ids, position_ids, None, None).ids[0]
        for start, end in spans:
            alone, ids = input_ids[:, start:end], placed[start:end]
            starts = document_starts(alone.shape, "cpu")
            matches = [
                (gap, offset)
                for gap in range(1, 4)
                for offset in range(6)
                if torch.equal(
                    ids,
                    coupled_places(
                        alone, coupling, starts, torch.full_like(alone, gap), torch.full_like(alone, offset)
                    ).ids[0],
                )
            ]
            assert len(matches) == 1, (start, ids.tolist())
            drawn.add(matches[0])
            anchors = ids == STRIDE - 1
            assert torch.equal(anchors, plain[start:end] == STRIDE - 1)  # the other tokens stay where they were
    assert len({gap for gap, _ in drawn}) == 3 and len({offset for _, offset in drawn}) == 6
    with pytest.raises(ValueError, match="train_column_offset must be an integer >= 0"):
        CogFMConfig(vocab_size=len(tokenizer), position_coupling={**coupling, "train_column_offset": -1})


def test_with_documents_sums_only_sums_are_coupled_and_the_rest_keep_ordinary_places(tokenizer, coupling):
    """A mixture's packed row: sums get exactly the coupled ids, a chain, a program, a logic problem, prose and a
    multiplication (its first line is not a sum) their indices from the document's start; causal, as generation
    needs, and a document that starts like a sum keeps the ids it got before its first foreign token."""
    sums_only = position_coupling(tokenizer, STRIDE, documents="sums")
    operators = [tokenizer.decode([token]) for token in sums_only["operator_token_ids"]]
    assert "+" in operators and all(set(text) <= set("+=?") for text in operators)
    texts = [
        lsd_problem(0, 6).text,
        next(TASKS["chains"].generate(0, op=3)).text,
        lsd_problem(1, 3).text,
        next(TASKS["code"].generate(0)).text,
        next(TASKS["logic"].generate(0)).text,
        "The 3 sums: 12+5=? and more.\nThen prose 4+4.\n",
        next(TASKS["arithmetic"].generate(0, operation="*")).text,
        "2024\n1+1=2\n",
    ]
    input_ids, position_ids, spans = packed_row(tokenizer, texts)
    starts = document_starts(input_ids.shape, "cpu", position_ids)
    gated = coupled_places(input_ids, sums_only, starts).ids[0].tolist()
    every = coupled_places(input_ids, coupling, starts).ids[0].tolist()
    for index, (start, end) in enumerate(spans):
        if index in (0, 2):  # the sums
            assert gated[start:end] == every[start:end]
        elif index == 5:  # "The 3 ...": foreign from its first token
            assert gated[start:end] == list(range(end - start))
        elif index == 7:  # a first line of digits alone is a number, not a sum: coupled only while on it
            assert gated[start : start + 4] == every[start : start + 4] == [0, STRIDE, 2 * STRIDE, 3 * STRIDE]
            assert gated[start + 4 : end] == list(range(4, end - start))
        else:
            first_foreign = next(
                i
                for i, token in enumerate(input_ids[0, start:end].tolist())
                if not tokenizer.decode([token]).isdigit()
            )
            assert gated[start + first_foreign : end] == list(range(first_foreign, end - start))
        for length in range(1, end - start):
            prefix = input_ids[:, start : start + length]
            assert (
                coupled_places(prefix, sums_only, document_starts(prefix.shape, "cpu")).ids[0].tolist()
                == gated[start : start + length]
            )


def test_with_canon_false_sums_pass_the_canon_layers_and_the_rest_of_the_mixture_keeps_them(tokenizer):
    """`canon: false`: in a packed row each sum reads exactly what the same weights without Canon layers read, and a
    chain exactly what they read with them; cached generation (the convolution states) decodes what a forward pass
    computes, for a sum and a chain in one left-padded batch."""
    sums_only = position_coupling(tokenizer, STRIDE, documents="sums")
    gated = coupled_model(tokenizer, {**sums_only, "canon": False}, canon_set="ABCD")
    with torch.no_grad():  # Canon layers start at zero's neighbourhood: make them matter
        for name, parameter in gated.named_parameters():
            if "canon" in name:
                parameter.normal_(std=0.5)
    without = coupled_model(tokenizer, sums_only)
    assert set(without.load_state_dict(gated.state_dict(), strict=False).unexpected_keys) == {
        name for name in gated.state_dict() if "canon" in name
    }
    everywhere = coupled_model(tokenizer, sums_only, canon_set="ABCD")
    everywhere.load_state_dict(gated.state_dict())

    texts = [lsd_problem(0, 5).text, next(TASKS["chains"].generate(0, op=3)).text, lsd_problem(1, 3).text]
    input_ids, position_ids, spans = packed_row(tokenizer, texts)
    logits = {
        name: model(input_ids, position_ids=position_ids).logits[0]
        for name, model in (("gated", gated), ("without", without), ("everywhere", everywhere))
    }
    for index, (start, end) in enumerate(spans):
        same, other = ("without", "everywhere") if index != 1 else ("everywhere", "without")
        torch.testing.assert_close(logits["gated"][start:end], logits[same][start:end], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(logits["gated"][start:end], logits[other][start:end], atol=1e-2)

    tokenizer.padding_side = "left"
    batch = tokenizer([lsd_problem(2, 4).prompt, texts[1][:40]], return_tensors="pt", padding=True)
    out = gated.generate(
        **batch, max_new_tokens=30, do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0
    )
    mask = torch.cat([batch["attention_mask"], torch.ones_like(out.sequences[:, batch["input_ids"].shape[1] :])], 1)
    full = gated(out.sequences, attention_mask=mask).logits
    prompt_length = batch["input_ids"].shape[1]
    torch.testing.assert_close(torch.stack(out.logits, 1), full[:, prompt_length - 1 : -1], atol=2e-4, rtol=1e-4)

    with pytest.raises(ValueError, match="position_coupling.canon says whether Canon layers act"):
        coupled_model(tokenizer, {**sums_only, "canon": False})  # no Canon layers: a setting nothing reads


def test_a_step_written_again_after_the_marker_takes_a_clean_steps_places(tokenizer, coupling):
    """Retry data: a wrong start of a step, the marker, the step again. Without the mistakes and markers, a retried
    document's tokens have exactly the clean document's places; a mistake has the places of a step's start."""
    assert coupling["back_token_id"] == tokenizer.convert_tokens_to_ids(BACK)
    task, rng = TASKS["addition_lsd"], random.Random(0)
    for seed in range(6):
        clean = lsd_problem(seed, 4)
        retried = add_retries(clean, task, 0.7, rng)
        assert retried.marker_spans
        places = {}
        for name, example in (("clean", clean), ("retried", retried)):
            encoded = tokenizer(example.text, add_special_tokens=False, return_offsets_mapping=True)
            ids = torch.tensor([encoded["input_ids"]])
            places[name] = (encoded, coupled_places(ids, coupling, document_starts(ids.shape, "cpu")).ids[0])
        offset = len(retried.prompt)
        removed = [(start + offset, end + offset) for start, end in retried.error_spans + retried.marker_spans]
        encoded, retried_places = places["retried"]
        kept = [
            place
            for (start, _), place in zip(encoded["offset_mapping"], retried_places.tolist())
            if not any(low <= start < high for low, high in removed)
        ]
        assert kept == places["clean"][1].tolist()
        for low, high in retried.error_spans:  # each mistake sits where its step's first tokens sit
            mistake = [
                place
                for (start, _), place in zip(encoded["offset_mapping"], retried_places.tolist())
                if low + offset <= start < high + offset
            ]
            assert [place % STRIDE for place in mistake] == list(range(1, len(mistake) + 1))


def test_generation_places_every_token_as_a_training_forward_does(tokenizer, coupling):
    model = coupled_model(tokenizer, coupling)
    tokenizer.padding_side = "left"
    prompts = [lsd_problem(0, 7).prompt, lsd_problem(1, 3).prompt]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(
        **batch, max_new_tokens=40, do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0
    )
    mask = torch.cat([batch["attention_mask"], torch.ones_like(out.sequences[:, batch["input_ids"].shape[1] :])], 1)
    full = model(out.sequences, attention_mask=mask).logits
    decoded = torch.stack(out.logits, 1)
    prompt_length = batch["input_ids"].shape[1]
    torch.testing.assert_close(decoded, full[:, prompt_length - 1 : -1], atol=2e-4, rtol=1e-4)
    # A static cache decodes the same; and the places matter: the same weights at Llama's positions differ.
    static = model.generate(**batch, max_new_tokens=40, do_sample=False, cache_implementation="static", pad_token_id=0)
    assert torch.equal(static, out.sequences)
    plain = coupled_model(tokenizer, None)
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(out.sequences, attention_mask=mask).logits, full, atol=1e-2)


def test_a_forward_after_cached_tokens_needs_the_coupled_ids(tokenizer, coupling):
    model = coupled_model(tokenizer, coupling)
    ids = tokenizer(lsd_problem(0, 4).text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    past = model(ids[:, :-1], use_cache=True).past_key_values
    with pytest.raises(ValueError, match="position_coupling needs the whole sequence"):
        model(ids[:, -1:], past_key_values=past)


def test_bad_coupling_settings_name_the_field(tmp_path):
    digits = list(range(10, 20))
    for coupling, message in (
        ({"stride": 32}, "a dict with"),
        (dict(digit_token_ids=digits[:9], newline_token_id=5, stride=32), "ten distinct token ids"),
        (dict(digit_token_ids=digits, newline_token_id=10, stride=32), "newline_token_id"),
        (dict(digit_token_ids=digits, newline_token_id=5, stride=2), "stride must be an integer >= 3"),
        (dict(digit_token_ids=digits, newline_token_id=5, stride=32, back_token_id=12), "back_token_id"),
    ):
        with pytest.raises(ValueError, match=f"position_coupling.*{message}|{message}"):
            CogFMConfig(vocab_size=97, position_coupling=coupling)
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    with pytest.raises(RecipeError, match=r"model\.position_coupling.*stride must be an integer >= 3"):
        TrainRecipe.from_dict({**recipe, "model": {**recipe["model"], "position_coupling": {"stride": 1}}})
    with pytest.raises(RecipeError, match=r"model\.position_coupling.*only with canon_set"):
        TrainRecipe.from_dict(
            {**recipe, "model": {**recipe["model"], "position_coupling": {"stride": 32, "canon": False}}}
        )
    with pytest.raises(RecipeError, match=r"model\.position_coupling.*train_column_offset must be an integer >= 0"):
        coupling = {"stride": 32, "train_column_offset": -2}
        TrainRecipe.from_dict({**recipe, "model": {**recipe["model"], "position_coupling": coupling}})
    with pytest.raises(RecipeError, match=r"overrides\.position_coupling.*set model\.position_coupling"):
        overrides = {**recipe["model"]["overrides"], "position_coupling": {"stride": 32}}
        TrainRecipe.from_dict({**recipe, "model": {**recipe["model"], "overrides": overrides}})


def test_the_lm_eval_cli_generates_what_the_model_generates_with_coupled_places(tokenizer, coupling, tmp_path):
    """lm-eval's `hf` model passes no position ids: the checkpoint's own code places the tokens, package-less."""
    model = coupled_model(tokenizer, coupling)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    task, limit = "cogfm_addition_lsd_digits5", 4
    code = (
        "import sys\nfrom lm_eval.__main__ import cli_evaluate\n"
        f"sys.argv = ['lm_eval', '--model', 'hf', '--model_args', 'pretrained={checkpoint},trust_remote_code=True', "
        f"'--include_path', {str(EVAL_TASKS_DIR)!r}, '--tasks', '{task}', '--device', 'cpu', '--limit', '{limit}', "
        "'--batch_size', '4', '--log_samples', '--output_path', 'results']\ncli_evaluate()\n"
    )
    result = run_isolated_python(code, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [samples] = (tmp_path / "results").rglob(f"samples_{task}_*.jsonl")
    responses = {s["doc_id"]: (s["doc"]["prompt"], s["resps"][0][0]) for s in map(json.loads, samples.open())}
    assert len(responses) == limit

    max_gen_toks = yaml.safe_load((EVAL_TASKS_DIR / "generated" / f"{task}.yaml").read_text())["generation_kwargs"][
        "max_gen_toks"
    ]
    plain = coupled_model(tokenizer, None)
    plain.load_state_dict(model.state_dict())
    differs = 0
    for prompt, response in responses.values():
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        written = []
        for candidate in (model, plain):
            out = candidate.generate(ids, max_new_tokens=max_gen_toks, do_sample=False, pad_token_id=0)
            written.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n\n")[0])
        assert written[0] == response, (prompt, response, written[0])
        differs += written[1] != response
    assert differs, "the coupled and the plain model wrote the same text: the test could not tell them apart"


@pytest.mark.parametrize("canon_set", ["", "ABCD"])
def test_training_stretches_each_documents_positions_by_random_steps_and_evaluation_does_not(canon_set):
    """`train_position_stretch` S: in training each token of a packed row sits 1..S places after the one before it
    in its document (each document from 0); evaluation and generation see the ordinary positions."""
    model = CogFMForCausalLM(small_config(canon_set=canon_set, train_position_stretch=3))
    lengths = (9, 30, 5, 20)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    input_ids = torch.randint(3, 97, position_ids.shape)
    seen = []
    model.model.rotary_emb.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["position_ids"]), with_kwargs=True
    )
    model.eval()
    with torch.no_grad():
        evaluated = model(input_ids, position_ids=position_ids).logits
    assert torch.equal(seen[-1], position_ids)
    model.train()
    steps = []
    for seed in range(3):
        torch.manual_seed(seed)
        trained = model(input_ids, position_ids=position_ids).logits
        placed, start = seen[-1][0], 0
        for n in lengths:
            document = placed[start : start + n]
            assert document[0] == 0
            steps += torch.diff(document).tolist()
            start += n
    assert set(steps) == {1, 2, 3}
    assert not torch.allclose(trained, evaluated)  # the stretched places reach the attention
    with pytest.raises(ValueError, match="train_position_stretch must be an integer >= 1"):
        small_config(train_position_stretch=0)
    with pytest.raises(ValueError, match="train_position_stretch and position_coupling"):
        coupling = dict(digit_token_ids=list(range(10, 20)), newline_token_id=5, stride=32)
        small_config(train_position_stretch=2, position_coupling=coupling)
