"""Bad input, table-driven (issue #19): each case goes through an entry point's own command-line path in-process
and must end with a non-zero exit, one line naming the file, section or field, no traceback, and no work done
(no data built, no output written). Cases with a real run behind them (a kill mid-save, SIGTERM, corrupt sources)
are in test_training.py, test_reliability.py and test_data.py."""

import re
from pathlib import Path

import pytest
import yaml

from cogfm_hf import CogFMConfig
from cogfm_hf.config import RecipeError
from cogfm_hf.training.run import main as train_main

from .conftest import tiny_recipe

# (name, edit of the recipe dict or None, command-line overrides, the message the exit must carry)
TRAINING_CASES = [
    ("unknown section", lambda r: r.update(schedule={}), [], r"recipe.yaml: unknown field\(s\) \['schedule'\]"),
    ("unknown training field", lambda r: r["training"].update(learning_rat=1), [], r"training.learning_rat: not a"),
    (
        "max_steps not a number",
        None,
        ["--max_steps", "abc"],
        r"training.max_steps: expected an integer, got str 'abc'",
    ),
    ("max_steps zero", None, ["--max_steps", "0"], r"training.max_steps: must be > 0"),
    (
        "learning rate a word",
        None,
        ["--learning_rate", "fast"],
        r"training.learning_rate: expected a finite number, got str",
    ),
    ("bf16 a word", None, ["--bf16", "maybe"], r"training.bf16"),
    ("no output_dir", lambda r: r["training"].pop("output_dir"), [], r"training.output_dir: give the run's output"),
    ("remove_unused_columns", None, ["--remove_unused_columns", "true"], r"training.remove_unused_columns: must be"),
    (
        "torch_compile",
        None,
        ["--torch_compile", "true"],
        r"training.torch_compile: use the recipe's top-level `compile",
    ),
    ("compile a word", None, ["--compile", "sometimes"], r"compile: expected"),
    (
        "seq_len a fraction",
        None,
        ["--data.pack.seq_len", "64.5"],
        r"data.pack.seq_len: expected an integer, got float 64.5",
    ),
    ("seq_len tiny", None, ["--data.pack.seq_len", "4"], r"data.pack.seq_len: must be >= 8"),
    (
        "vocab_size a word",
        None,
        ["--data.tokenizer.vocab_size", "big"],
        r"data.tokenizer.vocab_size: expected an integer, got str",
    ),
    ("vocab_size tiny", None, ["--data.tokenizer.vocab_size", "100"], r"data.tokenizer.vocab_size: must be >= 300"),
    ("tokenizer path missing", None, ["--data.tokenizer.path", "/nowhere"], r"data.tokenizer.path: '/nowhere'"),
    ("workers zero", None, ["--data.workers", "0"], r"data.workers: must be a positive integer"),
    ("unknown data key", None, ["--data.shuffle", "true"], r"data.*shuffle"),
    ("source of unknown type", lambda r: r["data"]["sources"][0].update(type="ftp"), [], r"sources\[0\].*type"),
    ("source without a path", lambda r: r["data"]["sources"][0].update(path="/nowhere/x"), [], r"sources\[0\]"),
    ("no sources", lambda r: r["data"].update(sources=[]), [], r"data.sources"),
    ("unknown preset", None, ["--model.preset", "cogfm-7t"], r"model.preset: unknown preset 'cogfm-7t'"),
    ("overrides typo", lambda r: r["model"]["overrides"].update(hiden_size=8), [], r"model.overrides: unknown"),
    ("heads do not divide", lambda r: r["model"]["overrides"].update(num_key_value_heads=3), [], r"num_key_value"),
    ("odd head_dim", lambda r: r["model"]["overrides"].update(head_dim=7), [], r"head_dim must be even"),
    ("vocab below the tokenizer", lambda r: r["model"]["overrides"].update(vocab_size=50), [], r"vocab_size: 50"),
    ("context below seq_len", lambda r: r["model"]["overrides"].update(max_position_embeddings=8), [], r"shorter"),
    ("unknown rope type", lambda r: r["model"]["overrides"].update(rope_parameters={"rope_type": "x"}), [], "rope"),
    ("checkpoint in pretraining", None, ["--model.checkpoint", "/nowhere"], r"model.checkpoint: pretraining starts"),
    ("unknown pacing", None, ["--curriculum.pacing", "fast"], r"curriculum.pacing: must be one of"),
    ("c0 above one", None, ["--curriculum.c0", "1.5"], r"curriculum.c0: must be in \(0, 1\]"),
    ("stages zero", None, ["--curriculum.stages", "0"], r"curriculum.stages: must be >= 1"),
    ("negative spike factor", None, ["--guard.spike_factor", "-1"], r"guard.spike_factor: must be > 1"),
    ("ema decay one", None, ["--guard.ema_decay", "1"], r"guard.ema_decay: must be in \[0, 1\)"),
    ("no consecutive skips", None, ["--guard.max_consecutive_skips", "0"], r"guard.max_consecutive_skips"),
    ("negative error weight", None, ["--loss.error_weight", "-1"], r"loss.error_weight"),
    ("no eval tasks", None, ["--eval.tasks", "[]"], r"eval.tasks: must be a non-empty list"),
    ("eval limit zero", None, ["--eval.limit", "0"], r"eval.limit: must be a positive integer"),
    ("lora rank zero", None, ["--lora.r", "0"], r"lora.r: must be >= 1"),
    ("peak tflops negative", None, ["--peak_tflops", "-1"], r"peak_tflops: must be > 0"),
    ("cpu threads zero", None, ["--cpu_threads", "0"], r"cpu_threads: must be >= 1"),
    ("override without a value", None, ["--max_steps"], r"max_steps"),
    ("positional junk", None, ["--max_steps", "3", "junk"], r"expected --field value, got 'junk'"),
    ("resume from nowhere", None, ["--resume_from_checkpoint", "/nowhere"], r"/nowhere is not a directory"),
    ("resume latest from nothing", None, ["--resume_from_checkpoint", "latest"], r"found no complete checkpoint"),
]


def _write(tmp_path: Path, edit) -> Path:
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    recipe["data"]["sources"] = [
        {"name": "corpus", "type": "files", "path": str(tmp_path)},
        *recipe["data"]["sources"],
    ]
    if edit is not None:
        edit(recipe)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _exit_message(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        train_main("pretrain", argv)
    message = stop.value.code
    assert isinstance(message, str) and message, f"exit {message!r}: not a message"
    assert "Traceback" not in capsys.readouterr().err
    return message


@pytest.mark.parametrize("name, edit, overrides, expected", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_a_bad_training_input_exits_with_one_line_naming_it_before_any_work(
    tmp_path, capsys, name, edit, overrides, expected
):
    path = _write(tmp_path, edit)
    message = _exit_message(capsys, [str(path), *overrides])
    assert message.startswith("recipe error: ") and "\n" not in message, message
    assert re.search(expected, message), message
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists(), "work started before the refusal"


def test_recipe_files_that_are_missing_malformed_or_not_a_mapping(tmp_path, capsys):
    assert "recipe file " in _exit_message(capsys, [str(tmp_path / "missing.yaml")])
    (tmp_path / "broken.yaml").write_text("training: [unclosed\n")
    message = _exit_message(capsys, [str(tmp_path / "broken.yaml")])
    assert "broken.yaml: not valid YAML" in message
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert "list.yaml" in _exit_message(capsys, [str(tmp_path / "list.yaml")])


def test_bad_inputs_to_the_other_entry_points(tmp_path, capsys):
    from cogfm_hf.data.__main__ import main as data_main
    from cogfm_hf.training.fsdp import main as export_main

    path = _write(tmp_path, None)
    cases = [  # (entry point, argv, what the one line must say)
        (data_main, ["build", str(tmp_path / "nowhere.yaml")], "recipe error: recipe file"),
        (data_main, ["build", str(path), "--workers", "0"], "recipe error: data.workers: must be a positive"),
        (lambda argv: train_main("finetune_lora", argv), [str(path)], "finetune_lora needs model.checkpoint"),
        (
            lambda argv: train_main("finetune_lora", argv),
            [str(path), "--model.overrides", "{}", "--model.checkpoint", "/nowhere"],
            "model.checkpoint: '/nowhere' holds no config.json",
        ),
        (export_main, ["export", str(tmp_path / "none"), str(tmp_path / "x"), "--config", str(tmp_path)], "config"),
    ]
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(CogFMConfig().to_json_string())
    cases.append(
        (
            export_main,
            ["export", str(tmp_path), str(tmp_path / "x"), "--config", str(tmp_path / "ckpt")],
            "no .metadata",
        )
    )
    for entry, argv, expected in cases:
        with pytest.raises(SystemExit) as stop:
            entry(argv)
        message = stop.value.code
        assert isinstance(message, str) and expected in message and "\n" not in message, (argv, message)
        assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "x").exists()


def test_cogfm_debug_shows_the_traceback_behind_the_one_line(tmp_path, monkeypatch):
    path = _write(tmp_path, None)
    monkeypatch.setenv("COGFM_DEBUG", "1")
    with pytest.raises(RecipeError, match=r"curriculum.pacing: must be one of"):
        train_main("pretrain", [str(path), "--curriculum.pacing", "fast"])


def test_a_lora_checkpoint_with_truncated_weights_is_refused_before_any_work(tmp_path, capsys):
    from cogfm_hf import CogFMForCausalLM

    CogFMForCausalLM(CogFMConfig(**tiny_recipe(tmp_path, tmp_path)["model"]["overrides"])).save_pretrained(
        tmp_path / "ckpt"
    )
    (tmp_path / "ckpt" / "tokenizer.json").write_text("{}")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    recipe["model"] = {"checkpoint": str(tmp_path / "ckpt")}
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as stop:
        train_main("finetune_lora", [str(path)])
    assert "model.checkpoint: " in stop.value.code and "model.safetensors is damaged or truncated" in stop.value.code
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "data").exists()


def test_resuming_a_checkpoint_of_another_shape_is_refused_before_any_work(tmp_path, capsys):
    from cogfm_hf import CogFMForCausalLM

    path = _write(tmp_path, None)
    overrides = dict(tiny_recipe(tmp_path, tmp_path)["model"]["overrides"], hidden_size=64)
    checkpoint = tmp_path / "out" / "checkpoint-3"
    CogFMForCausalLM(CogFMConfig(**overrides)).save_pretrained(checkpoint)
    for name in ("trainer_state.json", "optimizer.pt"):
        (checkpoint / name).write_text("{}")
    with pytest.raises(SystemExit) as stop:
        train_main("pretrain", [str(path), "--resume_from_checkpoint", "latest"])
    message = stop.value.code
    assert "training.resume_from_checkpoint: " in message and "hidden_size 64 -> 48" in message, message
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "data").exists()
