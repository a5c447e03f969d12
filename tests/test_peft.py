import torch
from peft import LoraConfig, PeftModel, get_peft_model

from cogfm_hf import CogFMForCausalLM

from .conftest import small_config


def _train_a_few_steps(model, ids, steps=5):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_default_lora_trains_only_adapters_and_merges_exactly(tmp_path):
    base = CogFMForCausalLM(small_config()).eval()
    base.save_pretrained(tmp_path / "base")
    frozen = {k: v.clone() for k, v in base.state_dict().items()}

    peft_model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM"))  # no target_modules given
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("v_proj" in n for n in trainable)

    ids = torch.randint(3, 97, (2, 16))
    _train_a_few_steps(peft_model.train(), ids)
    peft_model.eval()
    for name, value in peft_model.get_base_model().state_dict().items():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            torch.testing.assert_close(value, frozen[key], rtol=0, atol=0, msg=f"{name} changed")

    with torch.no_grad():
        adapted_logits = peft_model(ids).logits
        assert not torch.allclose(adapted_logits, CogFMForCausalLM.from_pretrained(tmp_path / "base")(ids).logits)

    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(
        CogFMForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, adapted_logits, rtol=0, atol=0)

    merged = reloaded.merge_and_unload()
    assert type(merged) is CogFMForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted_logits, atol=1e-5, rtol=1e-5)
