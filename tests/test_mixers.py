"""Every mixer of `layer_types` (attention, gated short convolution, Mamba-2, attention beside Mamba-2) and Canon
layers: exact under packing, left padding and the cache, and loadable where the package is not installed."""

import re

import pytest
import torch
from transformers import DynamicCache, StaticCache

from cogfm_hf import CogFMForCausalLM

from .conftest import run_isolated_python, small_config
from .test_checkpoint import LOAD_AND_DUMP

# Small SSM shapes with several scan chunks per sequence, so chunk boundaries are crossed too.
MAMBA = dict(mamba_d_ssm=64, mamba_d_head=16, mamba_d_state=8, mamba_chunk_size=4)
MIXERS = {
    "full_attention": dict(),
    "canon": dict(canon_set="ABCD"),
    "conv": dict(layer_types=["conv", "full_attention"]),
    "linear_attention": dict(layer_types=["linear_attention", "full_attention"], **MAMBA),
    "hybrid": dict(layer_types=["hybrid", "hybrid"], **MAMBA),
    "all_with_canon": dict(
        num_hidden_layers=4,
        layer_types=["conv", "linear_attention", "hybrid", "full_attention"],
        canon_set="ABCD",
        **MAMBA,
    ),
}


def model_for(name: str, seed: int = 0) -> CogFMForCausalLM:
    torch.manual_seed(seed)
    return CogFMForCausalLM(small_config(**MIXERS[name])).eval()


def documents(*lengths: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (1, n), generator=generator) for n in lengths]


@pytest.mark.parametrize("name", MIXERS)
def test_cached_greedy_decoding_equals_uncached(name):
    model = model_for(name)
    (prompt,) = documents(9)
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=12, do_sample=False, min_new_tokens=12)
        uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, min_new_tokens=12, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("name", MIXERS)
def test_a_cache_continued_by_several_tokens_at_once_gives_the_uncached_logits(name):
    model = model_for(name)
    (ids,) = documents(14)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        first = model(ids[:, :9], use_cache=True)
        rest = model(ids[:, 9:], past_key_values=first.past_key_values).logits
    torch.testing.assert_close(torch.cat([first.logits, rest], 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MIXERS)
def test_a_packed_row_gives_each_document_its_logits_alone(name):
    model = model_for(name)
    first, second, third = documents(11, 6, 2)
    packed = torch.cat([first, second, third], 1)
    position_ids = torch.cat([torch.arange(11), torch.arange(6), torch.arange(2)])[None]
    with torch.no_grad():
        logits = model(packed, position_ids=position_ids, use_cache=False).logits
        alone = [model(doc, use_cache=False).logits for doc in (first, second, third)]
        unmarked = model(packed, use_cache=False).logits  # no position_ids: one document
    torch.testing.assert_close(logits, torch.cat(alone, 1), rtol=1e-5, atol=1e-5)
    # The boundary matters: read as one document, the second document's logits change.
    assert (unmarked[:, 11:17] - alone[1]).abs().max() > 1e-3


def test_packed_rows_of_a_batch_may_share_one_row_of_position_ids():
    model = model_for("all_with_canon")
    rows = torch.cat([torch.cat(documents(5, 7, seed=seed), 1) for seed in (1, 2)])
    position_ids = torch.cat([torch.arange(5), torch.arange(7)])[None]
    with torch.no_grad():
        shared = model(rows, position_ids=position_ids, use_cache=False).logits
        each = [model(row[None], position_ids=position_ids, use_cache=False).logits for row in rows]
    torch.testing.assert_close(shared, torch.cat(each), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MIXERS)
def test_a_left_padded_batch_gives_each_row_what_it_gets_alone(name):
    model = model_for(name)
    long, short = documents(10, 4)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 6, dtype=torch.long), short], 1)])
    attention_mask = torch.ones_like(batch)
    attention_mask[1, :6] = 0
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        together = model.generate(batch, attention_mask=attention_mask, **kwargs)
        alone = [model.generate(row, **kwargs) for row in (long, short)]
        padded_logits = model(batch, attention_mask=attention_mask, use_cache=False).logits
        short_logits = model(short, use_cache=False).logits
    assert torch.equal(together[0], alone[0][0]) and torch.equal(together[1, 6:], alone[1][0])
    torch.testing.assert_close(padded_logits[1, 6:], short_logits[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["canon", "hybrid", "all_with_canon"])
def test_static_cache_and_beam_search_match_the_dynamic_cache(name):
    model = model_for(name)
    (prompt,) = documents(7)
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad():
        dynamic = model.generate(prompt, **kwargs)
        static = model.generate(prompt, cache_implementation="static", **kwargs)
        beams = model.generate(prompt, num_beams=3, **kwargs)
        beams_uncached = model.generate(prompt, num_beams=3, use_cache=False, **kwargs)
    assert torch.equal(static, dynamic) and torch.equal(beams, beams_uncached)


def test_a_cache_the_caller_builds_is_given_the_states_each_layer_keeps():
    model = model_for("all_with_canon")
    (prompt,) = documents(8)
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    with torch.no_grad():
        reference = model.generate(prompt, **kwargs)
        caches = (
            DynamicCache(config=model.config),
            StaticCache(config=model.config, max_cache_len=32),
            DynamicCache(),
        )
        for cache in caches:
            assert torch.equal(model.generate(prompt, past_key_values=cache, **kwargs), reference)


def test_a_cache_that_cannot_hold_canon_states_is_refused_with_the_layer_named():
    model = model_for("canon")
    (prompt,) = documents(5)
    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16), 0)  # an attention-only layer with contents
    with pytest.raises(ValueError, match="Layer 0 .*canon_set='ABCD'.* cannot hold"):
        model(prompt, past_key_values=cache)


@pytest.mark.parametrize("name", ["all_with_canon"])
def test_gradient_checkpointing_and_bf16_autocast(name):
    model = model_for(name).train()
    first, second = documents(9, 7)
    ids = torch.cat([first, second], 1)
    position_ids = torch.cat([torch.arange(9), torch.arange(7)])[None]
    loss = model(ids, position_ids=position_ids, labels=ids, use_cache=False).loss
    grads = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)
    model.activation_checkpointing_enable()
    checkpointed = model(ids, position_ids=position_ids, labels=ids, use_cache=False).loss
    checkpointed_grads = torch.autograd.grad(checkpointed, [p for p in model.parameters()], allow_unused=True)
    torch.testing.assert_close(checkpointed, loss)
    for grad, again in zip(grads, checkpointed_grads):
        assert grad is not None
        torch.testing.assert_close(again, grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids, position_ids=position_ids, labels=ids, use_cache=False).loss
    assert torch.isfinite(low) and abs(low.item() - loss.item()) < 0.1


def test_a_checkpoint_with_every_mixer_loads_package_less_with_identical_logits(tmp_path):
    ckpt, scratch = tmp_path / "ckpt", tmp_path / "scratch"
    scratch.mkdir()
    model = model_for("all_with_canon")
    model.save_pretrained(ckpt)
    assert (ckpt / "mixers_cogfm.py").exists()
    ids = torch.randint(3, 97, (2, 10))
    torch.save(ids, tmp_path / "ids.pt")
    script = LOAD_AND_DUMP.format(args=(str(ckpt), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")))
    result = run_isolated_python(script, cwd=scratch)
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        torch.testing.assert_close(dumped["logits"], model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(layer_types=["full_attention", "mamba2"]), "layer_types[1]"),
        (dict(layer_types=["conv", "linear_attention"]), "layer_types"),  # no attention layer
        (dict(canon_set="ABE"), "canon_set"),
        (dict(canon_set="AA"), "canon_set"),
        (dict(canon_set="A", canon_kernel=1), "canon_kernel"),
        (dict(layer_types=["conv", "full_attention"], conv_kernel=0), "conv_kernel"),
        (dict(layer_types=["hybrid", "hybrid"], mamba_d_ssm=100, mamba_d_head=16), "mamba_d_head"),
        (dict(layer_types=["hybrid", "hybrid"], mamba_d_ssm=64, mamba_d_head=16, mamba_n_groups=3), "mamba_n_groups"),
        (dict(layer_types=["hybrid", "hybrid"], mamba_d_state=0), "mamba_d_state"),
        # a setting no layer reads
        (dict(canon_kernel=3), "canon_kernel"),
        (dict(layer_types=["conv", "full_attention"], mamba_d_state=16), "mamba_d_state"),
    ],
)
def test_an_unknown_or_inconsistent_mixer_option_fails_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=re.escape(f"CogFMConfig.{field} ")):
        small_config(**overrides)


def test_default_lora_adapts_the_new_mixers_input_projections_and_merges_exactly():
    from peft import LoraConfig, get_peft_model

    model = model_for("all_with_canon")
    (ids,) = documents(12)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))  # no target_modules: our defaults
    adapted = {name.split(".lora_")[0] for name, p in peft_model.named_parameters() if p.requires_grad}
    assert {name.split(".")[-1] for name in adapted} == {"q_proj", "v_proj", "in_proj"}
    assert any(".conv.in_proj" in name for name in adapted) and any(".mamba.in_proj" in name for name in adapted)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        peft_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    with torch.no_grad():
        adapted_logits = peft_model(ids).logits
        merged_logits = peft_model.merge_and_unload()(ids).logits
    torch.testing.assert_close(merged_logits, adapted_logits, rtol=1e-4, atol=1e-5)
