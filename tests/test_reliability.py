"""Reliability: checkpoints are whole or invisible, and resume says which checkpoint it takes and why
(issue #19; the kill and SIGTERM runs are in test_training.py)."""

import errno
import os
import pickle
import time

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch.distributed.checkpoint import save as dcp_save

from cogfm_hf import CogFMConfig
from cogfm_hf.config import RecipeError
from cogfm_hf.tasks.code import ForeignProgram, ProgramTimeout, run_program
from cogfm_hf.training.checkpoints import explain_save_error, missing_parts, publish, recipe_changes, resolve_resume
from cogfm_hf.training.fsdp import check_dcp_metadata, export_consolidated
from cogfm_hf.training.recipe import TrainRecipe

from .conftest import tiny_recipe


def _checkpoint(directory, *files):
    directory.mkdir(parents=True)
    for name in files:
        if name.endswith(".safetensors"):  # read for real (its header is checked)
            save_file({"w": torch.zeros(2)}, str(directory / name))
        else:
            (directory / name).write_text("x")
    return directory


COMPLETE = ("trainer_state.json", "model.safetensors", "optimizer.pt")


def test_latest_takes_the_newest_complete_checkpoint_and_says_what_it_passed_over(tmp_path, capsys):
    _checkpoint(tmp_path / "checkpoint-3", *COMPLETE)
    _checkpoint(tmp_path / "checkpoint-9", *COMPLETE)
    _checkpoint(tmp_path / "checkpoint-12", "model.safetensors", "optimizer.pt")  # killed before its state
    _checkpoint(tmp_path / "checkpoint-15", "trainer_state.json")  # a disk that filled up
    (tmp_path / "checkpoint-99").write_text("not a directory")
    assert resolve_resume("latest", tmp_path) == str(tmp_path / "checkpoint-9")
    out = capsys.readouterr().out
    assert "passing over checkpoint-15, incomplete (no model weights" in out
    assert "passing over checkpoint-12, incomplete (no trainer_state.json)" in out
    assert "from " + str(tmp_path / "checkpoint-9") in out
    # Model-only checkpoints (save_only_model) need no optimizer state.
    _checkpoint(tmp_path / "checkpoint-20", "trainer_state.json", "model.safetensors")
    assert resolve_resume("latest", tmp_path, model_only=True) == str(tmp_path / "checkpoint-20")
    assert resolve_resume("latest", tmp_path) == str(tmp_path / "checkpoint-9")


def test_resume_refuses_what_it_cannot_use_naming_the_field_and_the_fix(tmp_path):
    with pytest.raises(RecipeError, match=r"training.resume_from_checkpoint: `latest` found no complete checkpoint"):
        resolve_resume("latest", tmp_path)
    broken = _checkpoint(tmp_path / "checkpoint-4", "model.safetensors")
    with pytest.raises(RecipeError, match=r"checkpoint-4 is incomplete \(no trainer_state.json, optimizer state"):
        resolve_resume(str(broken), tmp_path)
    with pytest.raises(RecipeError, match=r"nowhere is not a directory; give a checkpoint-N directory"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path)
    assert resolve_resume(None, tmp_path) is None
    assert missing_parts(_checkpoint(tmp_path / "checkpoint-5", *COMPLETE)) == []


def test_resume_true_means_latest_as_in_transformers(tmp_path):
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "out")
    recipe["training"]["resume_from_checkpoint"] = True
    assert TrainRecipe.from_dict(recipe).training["resume_from_checkpoint"] == "latest"


def test_publishing_replaces_an_older_checkpoint_of_the_same_step_whole(tmp_path):
    old = _checkpoint(tmp_path / "checkpoint-6", *COMPLETE, "old-only")
    staged = _checkpoint(tmp_path / ".staging" / "checkpoint-6", *COMPLETE)
    publish(staged, old)
    assert sorted(p.name for p in old.iterdir()) == sorted(COMPLETE) and not staged.exists()
    assert not (tmp_path / ".staging").exists()  # nothing left behind, not even the empty staging folder


def test_a_full_disk_is_named_and_the_partial_save_removed(tmp_path):
    staged = _checkpoint(tmp_path / ".staging" / "checkpoint-8", "model.safetensors")
    error = explain_save_error(OSError(errno.ENOSPC, "No space left on device"), staged)
    assert "is full" in str(error) and "--resume_from_checkpoint latest" in str(error)
    assert not staged.exists()


def test_resuming_under_another_recipe_names_every_changed_field(tmp_path):
    checkpoint = _checkpoint(tmp_path / "checkpoint-3", *COMPLETE)
    before = {"training": {"learning_rate": 0.001, "seed": 0}, "curriculum": {"pacing": "sqrt"}}
    (checkpoint / "cogfm_recipe.yaml").write_text(yaml.safe_dump(before))
    now = {
        "training": {"learning_rate": 0.0003, "seed": 0, "resume_from_checkpoint": "latest"},
        "curriculum": {"pacing": "linear", "c0": 0.2},
    }
    assert recipe_changes(checkpoint, now, "cogfm_recipe.yaml") == [
        "curriculum.c0: '(unset)' -> 0.2",
        "curriculum.pacing: 'sqrt' -> 'linear'",
        "training.learning_rate: 0.001 -> 0.0003",
    ]
    assert recipe_changes(checkpoint, before, "cogfm_recipe.yaml") == []


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_checkpoint_metadata_is_vetted_before_torch_unpickles_it(tmp_path, monkeypatch):
    # DCP (FSDP) checkpoints describe themselves in a pickle that torch loads in full: export and resume read it
    # first with an unpickler that admits only DCP's own classes.
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "checkpoint-2" / "pytorch_model_fsdp_0"
    with pytest.warns(UserWarning, match="single process"):
        dcp_save({"model": {"w": torch.randn(3, 4), "b": torch.zeros(2, dtype=torch.bfloat16)}}, checkpoint_id=real)
    check_dcp_metadata(real)  # what a real save writes passes
    for name in ("trainer_state.json", "optimizer.pt"):  # the weights are the sharded ones
        (tmp_path / "checkpoint-2" / name).write_text("x")
    assert resolve_resume("latest", tmp_path) == str(tmp_path / "checkpoint-2")

    (real / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(ValueError, match=r"refused, it is not plain checkpoint metadata \(posix.system\)"):
        check_dcp_metadata(real)
    with pytest.raises(RecipeError, match=r"training.resume_from_checkpoint: .*refused"):
        resolve_resume("latest", tmp_path)
    with pytest.raises(ValueError, match="refused"):
        export_consolidated(real, tmp_path / "export", CogFMConfig())
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    "source, refusal",
    [
        ("print(().__class__.__base__.__subclasses__())", r"characters \['.', '_'\]"),
        ("import os\nos.system('touch pwned')", r"characters"),
        ("a = 9**9**9**9\nprint(a)", r"'\*\*' is not in the generator's grammar"),
        ("a = exec\nprint(a)", r"name 'exec' is not one the generator writes"),
        ("a = 1" + "0" * 40 + "\nprint(a)", r"longer than 12 digits"),
    ],
)
def test_the_code_tracer_runs_only_programs_of_its_own_grammar(tmp_path, monkeypatch, source, refusal):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ForeignProgram, match=refusal):
        run_program(source)
    assert not (tmp_path / "pwned").exists()


def test_the_code_tracer_stops_a_runaway_program_by_lines_and_time():
    with pytest.raises(ProgramTimeout):
        run_program("a = 0\nfor i in range(100000000):\n    a = a + 1\nprint(a)")
    start = time.monotonic()
    with pytest.raises(ProgramTimeout):  # each line slower than the last: the time limit is checked at every line
        run_program("a = 3\nfor i in range(60):\n    a = a * a\nprint(a)", timeout_s=0.2)
    assert time.monotonic() - start < 5
    assert run_program("a = 3\nfor i in range(4):\n    a = a * 2\nprint(a)") == "48"


def test_truncated_weights_are_named_for_resume_and_lora(tmp_path, capsys):
    good = _checkpoint(tmp_path / "checkpoint-2", "trainer_state.json", "optimizer.pt")
    save_file({"w": torch.randn(64, 64)}, str(good / "model.safetensors"))
    cut = _checkpoint(tmp_path / "checkpoint-4", "trainer_state.json", "optimizer.pt")
    data = (good / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])  # a copy cut short
    assert resolve_resume("latest", tmp_path) == str(good)
    assert "passing over checkpoint-4: model.safetensors is damaged or truncated" in capsys.readouterr().out
    with pytest.raises(RecipeError, match=r"checkpoint-4: model.safetensors is damaged or truncated"):
        resolve_resume(str(cut), tmp_path)
