"""CogFM behaves like a native transformers model where users reach it: generation modes and cache classes, and
what reaches the attention functions (issue #18; this module grows with it)."""

import inspect
import json
import re

import pytest
import torch
from peft import (
    AdaLoraConfig,
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    get_peft_model,
)
from transformers import (
    AttentionInterface,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from transformers.cache_utils import DynamicCache, StaticCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from cogfm_hf import CogFMForCausalLM, CogFMForSequenceClassification, CogFMForTokenClassification, CogFMModel
from cogfm_hf.benchmarks.model_speed import llama_twin

from .conftest import run_isolated_python, small_config


def test_static_cache_generation_matches_the_dynamic_cache():
    # generate() hands a model with `layer_types` a dict of masks keyed by layer type (static cache, compile).
    model = CogFMForCausalLM(small_config()).eval()
    prompt = torch.randint(3, 97, (2, 7))
    dynamic = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    static = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0, cache_implementation="static")
    torch.testing.assert_close(static, dynamic, rtol=0, atol=0)


def test_every_attention_call_receives_the_rows_position_ids():
    # Packed rows restart position_ids at each document and carry no attention mask: varlen kernels
    # (flash-attention) find the document boundaries in position_ids, so every layer must be given them.
    seen = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        seen.append((module.layer_idx, kwargs.get("position_ids")))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("cogfm_recording", recording_attention)
    model = CogFMForCausalLM(small_config(attn_implementation="cogfm_recording")).eval()
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]])
    with torch.no_grad():
        model(input_ids=torch.randint(3, 97, (1, 12)), position_ids=position_ids)
    assert [layer for layer, _ in seen] == [0, 1]
    for _, received in seen:
        assert received is not None and torch.equal(received, position_ids)


def test_forward_kwargs_carry_transformers_typing():
    # transformers' tooling (and readers) find the accepted extra keyword arguments from this annotation.
    for forward in (CogFMForCausalLM.forward, CogFMModel.forward):
        annotation = inspect.signature(forward).parameters["kwargs"].annotation
        assert "TransformersKwargs" in str(annotation), forward


def test_saved_checkpoints_load_ready_for_inference(pretrained):
    for directory in (pretrained, pretrained / "checkpoint-3"):
        config = json.loads((directory / "config.json").read_text())
        assert config["use_cache"] is True, directory  # a plain forward returns a KV cache, as Llama's does
        tokenizer = AutoTokenizer.from_pretrained(directory)
        assert tokenizer.model_max_length == config["max_position_embeddings"], directory  # truncation=True caps
    card = (pretrained / "README.md").read_text()
    assert "AutoTokenizer.from_pretrained(" in card and card.count("trust_remote_code=True") >= 2  # no stdin prompt


@pytest.mark.parametrize(
    "rope_parameters",
    [
        {"rope_type": "default"},
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "dynamic", "factor": 4.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    ],
    ids=lambda p: p["rope_type"],
)
def test_rope_variants_match_llama_with_the_same_weights(rope_parameters):
    config = small_config(rope_parameters=dict(rope_parameters))
    cogfm = CogFMForCausalLM(config).eval()
    twin = llama_twin(config)
    twin.rope_parameters = dict(config.rope_parameters)
    llama = LlamaForCausalLM(LlamaConfig(**{**twin.to_dict(), "rope_parameters": dict(config.rope_parameters)}))
    llama.load_state_dict(cogfm.state_dict(), strict=True)
    ids = torch.randint(3, 97, (2, 150))  # past max_position_embeddings (128) and the originals: variants differ
    with torch.no_grad():
        torch.testing.assert_close(cogfm(ids).logits, llama.eval()(ids).logits, rtol=1e-4, atol=1e-5)
        plain = CogFMForCausalLM(small_config()).eval()
        plain.load_state_dict(cogfm.state_dict())
        assert torch.equal(plain(ids).logits, cogfm(ids).logits) == (rope_parameters["rope_type"] == "default")


def test_an_unknown_rope_type_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"CogFMConfig.rope_parameters has rope_type 'bogus'"):
        small_config(rope_parameters={"rope_type": "bogus"})


@pytest.mark.parametrize("factor", [0.25, 0.5])
def test_partial_rope_rotates_what_stablelm_rotates(factor):
    from transformers import StableLmConfig
    from transformers.models.stablelm import modeling_stablelm

    from modeling.modeling_cogfm import CogFMRotaryEmbedding, apply_rotary_pos_emb

    config = small_config(rope_parameters={"partial_rotary_factor": factor})
    reference = StableLmConfig(
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta, "partial_rotary_factor": factor},
    )
    q, k = torch.randn(2, config.num_attention_heads, 9, config.head_dim), torch.randn(2, 2, 9, config.head_dim)
    positions = torch.arange(9).repeat(2, 1) * 3  # a stride, so the relative angles are not the unit ones
    cos, sin = CogFMRotaryEmbedding(config)(q, positions)
    reference_cos, reference_sin = modeling_stablelm.StableLmRotaryEmbedding(reference)(q, positions)
    torch.testing.assert_close((cos, sin), (reference_cos, reference_sin))
    rotary = int(config.head_dim * factor)
    q_rot, k_rot = modeling_stablelm.apply_rotary_pos_emb(q[..., :rotary], k[..., :rotary], cos, sin)
    ours = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(
        ours, (torch.cat((q_rot, q[..., rotary:]), -1), torch.cat((k_rot, k[..., rotary:]), -1))
    )


@pytest.mark.parametrize("factor", [0.0, 0.25])
def test_partial_rope_and_nope_see_only_what_they_should_of_positions(factor):
    model = CogFMForCausalLM(small_config(rope_parameters={"partial_rotary_factor": factor})).eval()
    ids = torch.randint(3, 97, (1, 12))
    with torch.no_grad():
        cached = model.generate(ids[:, :4], max_new_tokens=8, do_sample=False)
        uncached = model.generate(ids[:, :4], max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    # One layer of NoPE attention reads the tokens before the last as a set: shuffling them changes nothing there.
    # (Position ids that do not step by 1 would not show it: transformers reads them as packed documents.)
    one_layer = CogFMForCausalLM(small_config(num_hidden_layers=1, rope_parameters={"partial_rotary_factor": factor}))
    shuffled = torch.cat((ids[:, :-1].flip(1), ids[:, -1:]), dim=1)  # the tokens before the last, reversed
    with torch.no_grad():
        last, last_shuffled = one_layer.eval()(ids).logits[:, -1], one_layer(shuffled).logits[:, -1]
    assert torch.allclose(last, last_shuffled, atol=1e-5) == (factor == 0.0)


def test_a_partial_rope_factor_outside_0_1_or_rotating_an_odd_count_is_refused():
    with pytest.raises(ValueError, match=r"partial_rotary_factor.*in \[0, 1\]"):
        small_config(rope_parameters={"partial_rotary_factor": 1.5})
    with pytest.raises(ValueError, match=r"partial_rotary_factor.*RoPE rotates pairs"):
        small_config(rope_parameters={"partial_rotary_factor": 0.3125})  # 5 of 16


def cogfm_and_llama(**overrides) -> tuple[CogFMForCausalLM, LlamaForCausalLM]:
    """A CogFM and the LlamaForCausalLM carrying exactly its weights: whatever transformers does with Llama,
    it must do with CogFM, to the same result."""
    cogfm = CogFMForCausalLM(small_config(**overrides)).eval()
    twin = llama_twin(cogfm.config)
    twin._attn_implementation = cogfm.config._attn_implementation
    llama = LlamaForCausalLM(twin)
    llama.load_state_dict(cogfm.state_dict(), strict=True)
    return cogfm, llama.eval()


GENERATION_MODES = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.8, num_return_sequences=2),
    "beam_search": dict(do_sample=False, num_beams=3, num_return_sequences=2),
    "beam_sampling": dict(do_sample=True, num_beams=2),
    "static_cache": dict(do_sample=False, cache_implementation="static"),
    "no_cache": dict(do_sample=False, use_cache=False),
    "repetition_penalty": dict(do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=2),
}


@pytest.mark.parametrize("mode", GENERATION_MODES, ids=str)
def test_generation_modes_match_llama_with_the_same_weights(mode):
    cogfm, llama = cogfm_and_llama()
    # Left padding: the second row is shorter, so masks and position ids are exercised, not just the happy path.
    prompt = torch.randint(3, 97, (2, 7))
    attention_mask = torch.ones_like(prompt)
    prompt[1, :3], attention_mask[1, :3] = 0, 0
    kwargs = dict(attention_mask=attention_mask, max_new_tokens=8, pad_token_id=0, **GENERATION_MODES[mode])
    outputs = []
    for model in (cogfm, llama):
        torch.manual_seed(1234)  # sampling draws the same numbers for both
        outputs.append(model.generate(prompt, return_dict_in_generate=True, output_scores=True, **kwargs))
    torch.testing.assert_close(outputs[0].sequences, outputs[1].sequences, rtol=0, atol=0)
    for cogfm_scores, llama_scores in zip(outputs[0].scores, outputs[1].scores, strict=True):
        torch.testing.assert_close(cogfm_scores, llama_scores, rtol=1e-4, atol=1e-4)


def test_assisted_decoding_matches_llama_and_plain_greedy():
    cogfm, llama = cogfm_and_llama()
    cogfm_draft, llama_draft = cogfm_and_llama(num_hidden_layers=1)
    prompt = torch.randint(3, 97, (1, 6))
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    assisted = cogfm.generate(prompt, assistant_model=cogfm_draft, **kwargs)
    torch.testing.assert_close(assisted, llama.generate(prompt, assistant_model=llama_draft, **kwargs), rtol=0, atol=0)
    torch.testing.assert_close(assisted, cogfm.generate(prompt, **kwargs), rtol=0, atol=0)  # lossless
    prompt_lookup = cogfm.generate(prompt, prompt_lookup_num_tokens=3, **kwargs)
    torch.testing.assert_close(prompt_lookup, assisted, rtol=0, atol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_hidden_states_and_attentions_match_llama(attn_implementation):
    cogfm, llama = cogfm_and_llama(attn_implementation=attn_implementation)
    ids = torch.randint(3, 97, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.no_grad():
        ours = cogfm(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        theirs = llama(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == cogfm.config.num_hidden_layers + 1
    for mine, reference in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
    if attn_implementation == "eager":  # only eager materialises the attention probabilities
        assert len(ours.attentions) == cogfm.config.num_hidden_layers
        for mine, reference in zip(ours.attentions, theirs.attentions, strict=True):
            assert mine.shape == (2, cogfm.config.num_attention_heads, 9, 9)
            torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)


PEFT_METHODS = {
    "lora": lambda: LoraConfig(task_type="CAUSAL_LM"),
    "dora": lambda: LoraConfig(task_type="CAUSAL_LM", use_dora=True),
    "ia3": lambda: IA3Config(task_type="CAUSAL_LM"),
    "loha": lambda: LoHaConfig(task_type="CAUSAL_LM"),
    "lokr": lambda: LoKrConfig(task_type="CAUSAL_LM"),
    "adalora": lambda: AdaLoraConfig(task_type="CAUSAL_LM", total_step=10),
    "prompt_tuning": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "prefix_tuning": lambda: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "p_tuning": lambda: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=32),
}


@pytest.mark.parametrize("method", PEFT_METHODS, ids=str)
def test_peft_methods_work_with_their_defaults_as_they_do_for_llama(method):
    cogfm, llama = cogfm_and_llama()
    ids = torch.randint(3, 97, (2, 10))
    with torch.no_grad():
        base_logits = cogfm(ids).logits
    # Each method's defaults (no target_modules): the same modules adapted as in Llama.
    adapted = [get_peft_model(model, PEFT_METHODS[method]()) for model in (cogfm, llama)]
    ours, theirs = (dict(model.named_parameters()) for model in adapted)
    trainable = sorted(name for name, parameter in ours.items() if parameter.requires_grad)
    assert trainable and trainable == sorted(name for name, parameter in theirs.items() if parameter.requires_grad)
    # Adapters that start as the identity (LoRA's B = 0...) would hide a wrong wiring: move them, identically.
    with torch.no_grad():
        for name in trainable:
            ours[name].add_(0.5 * torch.randn_like(ours[name]))
            theirs[name].copy_(ours[name])
    with torch.no_grad():
        ours_logits, theirs_logits = (model(input_ids=ids).logits for model in adapted)
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours_logits[:, -ids.shape[1] :], base_logits, atol=1e-3)  # the adapter acts

    # It trains (gradients reach the adapter only) and generates with its cache, as Llama's does.
    adapted[0].train()
    adapted[0](input_ids=ids, labels=ids).loss.backward()
    assert all(ours[name].grad is not None for name in trainable)
    assert all(p.grad is None for name, p in ours.items() if name not in trainable)
    adapted[0].eval()
    kwargs = dict(input_ids=ids[:, :5], attention_mask=torch.ones_like(ids[:, :5]), max_new_tokens=5)
    generated = [model.generate(**kwargs, do_sample=False, pad_token_id=0) for model in adapted]
    torch.testing.assert_close(generated[0], generated[1], rtol=0, atol=0)


def test_the_model_card_snippets_run_where_the_package_is_not_installed(pretrained):
    # The card's own code, in order (load and generate, then peft with the modules it names), in a process that
    # cannot import cogfm_hf and has no stdin to answer a trust_remote_code prompt on.
    card = (pretrained / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)
    assert len(snippets) == 2 and "get_peft_model" in snippets[1]
    check = (
        "\ntrainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]\n"
        "assert trainable and all('lora_' in n for n in trainable), trainable\n"
        "assert {n.split('.')[-4] for n in trainable} == set(lora.target_modules), trainable\n"
        "get_peft_model(type(model).from_pretrained(%r, trust_remote_code=True), ia3)\n"
        "print('adapted', len(trainable))\n" % pretrained.name
    )
    result = run_isolated_python("\n".join(snippets) + check, cwd=pretrained.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "adapted" in result.stdout


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (CogFMForSequenceClassification, LlamaForSequenceClassification),
        (CogFMForTokenClassification, LlamaForTokenClassification),
    ],
)
def test_classification_heads_match_llama(ours, theirs):
    cogfm = ours(small_config(num_labels=3)).eval()
    twin = llama_twin(cogfm.config)
    twin.num_labels, twin.pad_token_id = 3, 0
    llama = theirs(twin).eval()
    llama.load_state_dict(cogfm.state_dict(), strict=True)
    ids = torch.randint(3, 97, (3, 8))
    ids[0, -3:] = 0  # right padding: a sequence classifier reads the last non-padding token
    ids[1, :2] = 0  # left padding
    labels = torch.tensor([0, 2, 1]) if ours is CogFMForSequenceClassification else torch.randint(0, 3, (3, 8))
    mine, reference = cogfm(ids, labels=labels), llama(ids, labels=labels)
    torch.testing.assert_close(mine.logits, reference.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine.loss, reference.loss, rtol=1e-5, atol=1e-5)
    mine.loss.backward()
    assert cogfm.score.weight.grad is not None and cogfm.model.embed_tokens.weight.grad is not None


CLASSIFY_WITHOUT_THE_PACKAGE = """
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
path, ids_path, out_path = {args!r}
ids = torch.load(ids_path)
sequence = AutoModelForSequenceClassification.from_pretrained(path + "/sequence", trust_remote_code=True).eval()
token = AutoModelForTokenClassification.from_pretrained(path + "/token", trust_remote_code=True).eval()
assert "cogfm_hf" not in type(sequence).__module__, type(sequence).__module__
with torch.no_grad():
    torch.save({{"sequence": sequence(ids).logits, "token": token(ids).logits}}, out_path)
"""


def test_a_pretrained_lm_loads_as_a_classifier_with_and_without_the_package(tmp_path):
    # The path to a verifier or a process reward model: pretrain, then load the checkpoint under a score head.
    lm = CogFMForCausalLM(small_config()).eval()
    lm.save_pretrained(tmp_path / "lm")
    auto_map = json.loads((tmp_path / "lm" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_cogfm.CogFMForSequenceClassification"
    ids = torch.randint(3, 97, (2, 8))
    torch.save(ids, tmp_path / "ids.pt")
    expected = {}
    for kind, auto_class in (
        ("sequence", AutoModelForSequenceClassification),
        ("token", AutoModelForTokenClassification),
    ):
        classifier = auto_class.from_pretrained(tmp_path / "lm", num_labels=2).eval()
        assert type(classifier).__name__ == f"CogFMFor{kind.title()}Classification"
        for name, value in lm.model.state_dict().items():  # the backbone is the LM's, the head is new
            torch.testing.assert_close(classifier.model.state_dict()[name], value, rtol=0, atol=0)
        classifier.save_pretrained(tmp_path / kind)
        with torch.no_grad():
            expected[kind] = classifier(ids).logits
    # A classifier's checkpoint also answers AutoModelForCausalLM (its auto_map names every head).
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sequence").config.num_labels == 2

    script = CLASSIFY_WITHOUT_THE_PACKAGE.format(
        args=(str(tmp_path), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt"))
    )
    result = run_isolated_python(script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = torch.load(tmp_path / "out.pt")
    for kind, logits in expected.items():
        torch.testing.assert_close(dumped[kind], logits, rtol=0, atol=0)


def test_sequence_classification_takes_lora_and_trains_its_head_whole():
    model = CogFMForSequenceClassification(small_config(num_labels=2))
    adapted = get_peft_model(model, LoraConfig(task_type="SEQ_CLS"))  # default targets; the head is trained whole
    trainable = {name for name, parameter in adapted.named_parameters() if parameter.requires_grad}
    assert any("lora_" in name for name in trainable) and any("score" in name for name in trainable)
    adapted(input_ids=torch.randint(3, 97, (2, 6)), labels=torch.tensor([0, 1])).loss.backward()


def _packed_row_and_documents():
    lengths = [5, 3, 6]
    documents = [torch.randint(3, 97, (1, n)) for n in lengths]
    row = torch.cat(documents, dim=1)
    position_ids = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    return row, position_ids, documents


@pytest.mark.parametrize(
    "attn_implementation",
    ["eager", "sdpa", pytest.param("flex_attention", marks=pytest.mark.slow)],  # flex compiles on CPU: ~40 s
)
def test_packed_documents_never_attend_to_each_other(attn_implementation):
    # Our training rows: several documents, position_ids restarting at each, no attention mask. Every token's
    # logits must equal those of its document run alone.
    model = CogFMForCausalLM(small_config(attn_implementation=attn_implementation)).eval()
    row, position_ids, documents = _packed_row_and_documents()
    with torch.no_grad():
        alone = torch.cat([model(input_ids=document).logits for document in documents], dim=1)
        for use_cache in (False, True):  # training passes False; a plain forward returns a cache (as Llama's)
            packed = model(input_ids=row, position_ids=position_ids, use_cache=use_cache).logits
            torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5, msg=f"use_cache={use_cache}")


def _flash_attention_2_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return torch.cuda.is_available() and is_flash_attn_2_available()


@pytest.mark.skipif(not _flash_attention_2_available(), reason="needs CUDA and the flash-attn package")
def test_packed_documents_under_flash_attention_varlen():
    # flash-attention takes no mask: its varlen path finds the documents in position_ids (hence they reach every
    # attention call). Runs where a GPU and flash-attn exist (the GPU check); skipped on CPU machines.
    config = small_config(attn_implementation="flash_attention_2")
    model = CogFMForCausalLM(config).to("cuda", torch.bfloat16).eval()
    row, position_ids, documents = _packed_row_and_documents()
    with torch.no_grad():
        packed = model(input_ids=row.cuda(), position_ids=position_ids.cuda()).logits.float()
        alone = torch.cat([model(input_ids=document.cuda()).logits.float() for document in documents], dim=1)
    torch.testing.assert_close(packed, alone, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("cache_class", [DynamicCache, StaticCache], ids=lambda c: c.__name__)
def test_generation_continues_from_a_cache_the_caller_holds(cache_class):
    # A multi-turn pattern: generate, keep the cache, append text, generate again without recomputing the prefix.
    cogfm, llama = cogfm_and_llama()
    prompt, follow_up = torch.randint(3, 97, (1, 6)), torch.randint(3, 97, (1, 3))
    results = []
    for model in (cogfm, llama):
        kwargs = dict(max_cache_len=64) if cache_class is StaticCache else {}
        cache = cache_class(config=model.config, **kwargs)
        first = model.generate(prompt, past_key_values=cache, max_new_tokens=4, do_sample=False, pad_token_id=0)
        second = model.generate(
            torch.cat([first, follow_up], dim=1),
            past_key_values=cache,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
        results.append(second)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    fresh = cogfm.generate(
        torch.cat([results[0][:, :10], follow_up], dim=1), max_new_tokens=4, do_sample=False, pad_token_id=0
    )
    torch.testing.assert_close(results[0], fresh, rtol=0, atol=0)  # the kept cache changes nothing
