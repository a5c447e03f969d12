import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, DynamicCache

from cogfm_hf import PRESETS, CogFMConfig, CogFMForCausalLM, CogFMModel

from .conftest import small_config


def test_auto_classes_build_cogfm(config):
    assert isinstance(AutoModelForCausalLM.from_config(config), CogFMForCausalLM)
    assert isinstance(AutoModel.from_config(config), CogFMModel)


def test_residual_projections_use_depth_scaled_init():
    config = small_config(num_hidden_layers=8, hidden_size=256, intermediate_size=512, initializer_range=0.02)
    model = CogFMForCausalLM(config)
    layer = model.model.layers[3]
    scaled = 0.02 / (2 * 8) ** 0.5
    assert layer.self_attn.o_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert layer.mlp.down_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(layer.input_layernorm.weight == 1)


def test_tied_and_untied_embeddings(config):
    tied = CogFMForCausalLM(config)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    untied = CogFMForCausalLM(small_config(tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight


def test_overfitting_one_batch_drives_loss_down(config):
    model = CogFMForCausalLM(config)
    batch = torch.randint(3, config.vocab_size, (4, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 4.0  # ~ln(97) at init
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_loss_uses_num_items_in_batch(config):
    model = CogFMForCausalLM(config)
    batch = torch.randint(3, config.vocab_size, (2, 16))
    mean_loss = model(input_ids=batch, labels=batch).loss
    tokens = batch.numel() - batch.shape[0]  # one label per sequence is lost to the shift
    summed_over_40 = model(input_ids=batch, labels=batch, num_items_in_batch=torch.tensor(40)).loss
    torch.testing.assert_close(summed_over_40, mean_loss * tokens / 40)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_forward_and_backward_on_meta(name):
    config = CogFMConfig.from_preset(name)
    with torch.device("meta"):
        model = CogFMForCausalLM(config)
        input_ids = torch.randint(0, config.vocab_size, (2, 16))
    out = model(input_ids=input_ids, labels=input_ids)
    assert out.logits.shape == (2, 16, config.vocab_size)
    out.loss.backward()
    assert model.model.layers[-1].mlp.down_proj.weight.grad.shape == model.model.layers[-1].mlp.down_proj.weight.shape


def _sharp_model(**overrides):
    # A larger init spreads the logits so greedy decoding has no near-ties that float noise could flip.
    model = CogFMForCausalLM(small_config(initializer_range=0.2, **overrides))
    return model.eval()


def test_incremental_decoding_with_cache_matches_full_forward():
    model = _sharp_model()
    ids = torch.randint(3, 97, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        step_logits = [model(ids[:, :5], past_key_values=cache, use_cache=True).logits]
        for t in range(5, 12):
            step_logits.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(step_logits, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_generation_with_cache_equals_without_cache():
    model = _sharp_model()
    prompt = torch.randint(3, 97, (1, 7))
    kwargs = dict(max_new_tokens=24, min_new_tokens=24, do_sample=False)
    with_cache = model.generate(prompt, use_cache=True, **kwargs)
    without_cache = model.generate(prompt, use_cache=False, **kwargs)
    assert with_cache.shape == (1, 31)
    assert torch.equal(with_cache, without_cache)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_left_padded_batch_generates_like_each_prompt_alone(attn_implementation):
    model = _sharp_model()
    model.set_attn_implementation(attn_implementation)
    pad = model.config.pad_token_id
    prompts = [torch.randint(3, 97, (n,)) for n in (3, 9, 6)]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = prompt
        attention_mask[row, width - len(prompt) :] = 1
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=pad)
    batched = model.generate(input_ids, attention_mask=attention_mask, **kwargs)[:, width:]
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], **kwargs)[0, len(prompt) :]
        assert torch.equal(batched[row], alone), f"prompt {row} (length {len(prompt)})"


@pytest.mark.parametrize("qk_norm", [False, True])
def test_sdpa_and_eager_attention_agree(qk_norm):
    sdpa = CogFMForCausalLM(small_config(qk_norm=qk_norm, attn_implementation="sdpa")).eval()
    eager = CogFMForCausalLM(small_config(qk_norm=qk_norm, attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    ids = torch.randint(3, 97, (2, 20))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding in one row
    with torch.no_grad():
        a = sdpa(ids, attention_mask=mask).logits
        b = eager(ids, attention_mask=mask).logits
    torch.testing.assert_close(a[0, 5:], b[0, 5:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(config):
    plain = CogFMForCausalLM(config).train()
    checkpointed = CogFMForCausalLM(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.model.gradient_checkpointing
    ids = torch.randint(3, 97, (2, 24))
    for model in (plain, checkpointed):
        model(input_ids=ids, labels=ids).loss.backward()
    for (name, p), (_, q) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)
