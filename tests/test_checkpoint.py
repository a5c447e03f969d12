"""Hub-ready checkpoints: a plain save_pretrained directory loads where cogfm_hf is not installed."""

import json

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from cogfm_hf import CogFMForCausalLM, CogFMModel

from .conftest import run_isolated_python, small_config

LOAD_AND_DUMP = """
import torch
from transformers import AutoModel, AutoModelForCausalLM
path, ids_path, out_path = {args!r}
ids = torch.load(ids_path)
lm = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
base = AutoModel.from_pretrained(path, trust_remote_code=True)
assert type(lm).__name__ == "CogFMForCausalLM" and type(base).__name__ == "CogFMModel", (type(lm), type(base))
assert "cogfm_hf" not in type(lm).__module__, type(lm).__module__
with torch.no_grad():
    torch.save({{"logits": lm(ids).logits, "hidden": base(ids).last_hidden_state,
                 "module": type(lm).__module__}}, out_path)
print("loaded from", type(lm).__module__)
"""


def test_save_pretrained_writes_a_self_contained_directory(tmp_path):
    model = CogFMForCausalLM(small_config())
    model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "configuration_cogfm.py",
        "modeling_cogfm.py",
        "mixers_cogfm.py",
        "coupling_cogfm.py",
    } <= names
    assert "__init__.py" not in names
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_cogfm.CogFMConfig",
        "AutoModel": "modeling_cogfm.CogFMModel",
        "AutoModelForCausalLM": "modeling_cogfm.CogFMForCausalLM",
        "AutoModelForSequenceClassification": "modeling_cogfm.CogFMForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_cogfm.CogFMForTokenClassification",
    }
    assert config["architectures"] == ["CogFMForCausalLM"]
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2 and generation["pad_token_id"] == 0
    # Tied weights are stored once.
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")


def test_copied_modeling_files_import_only_torch_transformers_and_each_other(tmp_path):
    CogFMForCausalLM(small_config()).save_pretrained(tmp_path)
    for name in ("configuration_cogfm.py", "modeling_cogfm.py", "mixers_cogfm.py", "coupling_cogfm.py"):
        for line in (tmp_path / name).read_text().splitlines():
            if line.startswith(("import ", "from ")):
                module = line.split()[1]
                assert module.split(".")[0] in {"torch", "transformers", "math", "collections", "dataclasses"} or (
                    module in {".configuration_cogfm", ".mixers_cogfm", ".coupling_cogfm"}
                ), f"{name}: {line}"


def test_package_less_load_gives_identical_logits(tmp_path):
    ckpt, scratch = tmp_path / "ckpt", tmp_path / "scratch"
    scratch.mkdir()
    model = CogFMForCausalLM(small_config(qk_norm=True)).eval()
    model.save_pretrained(ckpt)
    ids = torch.randint(3, 97, (2, 10))
    torch.save(ids, tmp_path / "ids.pt")

    result = run_isolated_python(
        LOAD_AND_DUMP.format(args=(str(ckpt), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt"))), cwd=scratch
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = torch.load(tmp_path / "out.pt")
    assert dumped["module"].startswith("transformers_modules.")
    with torch.no_grad():
        torch.testing.assert_close(dumped["logits"], model(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(dumped["hidden"], model.model(ids).last_hidden_state, rtol=0, atol=0)


def test_isolated_process_really_cannot_import_the_package(tmp_path):
    result = run_isolated_python("import cogfm_hf", cwd=tmp_path)
    assert result.returncode != 0 and "deliberately unavailable" in result.stderr


def test_base_model_checkpoint_and_resave_of_remote_code(tmp_path):
    base = CogFMModel(small_config())
    base.save_pretrained(tmp_path / "base")
    auto_map = json.loads((tmp_path / "base" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_cogfm.CogFMModel"
    # A model loaded through remote code saves a checkpoint that is Hub-ready again.
    CogFMForCausalLM(small_config()).save_pretrained(tmp_path / "lm")
    remote = AutoModelForCausalLM.from_pretrained(tmp_path / "lm", trust_remote_code=True)
    remote.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert set(again["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
    }
    assert (tmp_path / "again" / "modeling_cogfm.py").exists()
