"""The chains role probe (cogfm_hf.experiments.role_probe) on real solutions and a real trained checkpoint."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cogfm_hf.experiments.role_probe import main, probe, role_offsets
from cogfm_hf.tasks import get_task


@pytest.mark.parametrize("task", ["chains", "chains_plan"])
def test_every_role_points_at_its_gold_text(task):
    for _, example in zip(range(40), get_task(task).generate(3, "train", op=(1, 6))):
        text = example.text
        offsets = role_offsets(example)
        for _, offset, gold in offsets:
            assert text[offset : offset + len(gold)] == gold
        roles = [role for role, _, _ in offsets]
        assert roles.count("result") == example.difficulty  # one per operation
        assert roles.count("step name (the first)") == 1 and roles[-1] == "answer"
        if task == "chains_plan":
            assert roles.count("walk name (the question's)") == 1
            assert roles.count("walk operand 1") == example.difficulty and roles.count("constant value") == 1
            assert text[offsets[0][1] :].startswith(example.prompt.splitlines()[-1].removesuffix("=?"))
        else:
            assert "walk name" not in roles


def test_probe_counts_what_greedy_decoding_of_each_prefix_predicts(pretrained):
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    model = AutoModelForCausalLM.from_pretrained(pretrained, trust_remote_code=True).eval()
    counts = probe(model, tokenizer, "chains_plan", n=3, seed=1)
    expected: dict[str, list[int]] = {}
    for _, example in zip(range(3), get_task("chains_plan").generate(1, "train", op=(1, 4))):
        text = example.text
        for role, offset, gold in role_offsets(example):
            prefix = tokenizer(text[:offset], return_tensors="pt").input_ids
            with torch.no_grad():
                next_token = model(prefix).logits[0, -1].argmax().item()
            right, total = expected.setdefault(role, [0, 0])
            expected[role] = [
                right + int(next_token == tokenizer(gold, add_special_tokens=False).input_ids[0]),
                total + 1,
            ]
    assert counts == {role: tuple(value) for role, value in expected.items()}


def test_cli_prints_a_row_per_role_and_rejects_other_tasks(pretrained, capsys):
    main([str(pretrained), "--task", "chains", "--n", "6", "--seed", "2"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert {row.split(" | ")[0].lstrip("| ") for row in rows} == {
        "step name (the first)",
        "step name",
        "operand 1",
        "operand 2",
        "value 1",
        "value 2",
        "result",
        "answer",
    }
    with pytest.raises(SystemExit):
        main([str(pretrained), "--task", "logic"])
