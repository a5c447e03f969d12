"""CogFM behaves like a native transformers model where users reach it: generation modes and cache classes, and
what reaches the attention functions (issue #18; this module grows with it)."""

import inspect
import json

import pytest
import torch
from transformers import AttentionInterface, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from cogfm_hf import CogFMForCausalLM, CogFMModel
from cogfm_hf.benchmarks.model_speed import llama_twin

from .conftest import small_config


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
