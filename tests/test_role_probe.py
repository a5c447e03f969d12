"""The chains role probe (cogfm_hf.experiments.role_probe) on real solutions and a real trained checkpoint."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cogfm_hf.experiments.role_probe import first_errors, line_name, main, probe, role_offsets
from cogfm_hf.tasks import get_task


@pytest.mark.parametrize("task", ["chains", "chains_plan", "chains_link"])
def test_every_role_points_at_its_gold_text(task):
    for _, example in zip(range(40), get_task(task).generate(3, "train", op=(1, 6))):
        text = example.text
        offsets = role_offsets(example)
        for _, offset, gold in offsets:
            assert text[offset : offset + len(gold)] == gold
        roles = [role for role, _, _ in offsets]
        assert roles.count("result") == example.difficulty  # one per operation
        assert roles.count("step name (the first)") == 1 and roles[-2:] == ["end", "answer"]
        if task == "chains_link":
            assert roles.count("walk user (the question)") == 1 and roles.count("walk user") == example.difficulty
            assert text[offsets[0][1] :].startswith("?>" + example.prompt.splitlines()[-1].removesuffix("=?"))
        else:
            assert "walk user" not in roles
        if task != "chains":
            assert roles.count("walk name (the question's)") == 1
            assert roles.count("walk operand 1") == example.difficulty and roles.count("constant value") == 1
        if task == "chains_plan":
            assert text[offsets[0][1] :].startswith(example.prompt.splitlines()[-1].removesuffix("=?"))
        if task == "chains":
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
    main([str(pretrained), "--task", "chains", "--n", "6", "--seed", "2", "--op", "6"])
    out = capsys.readouterr().out.splitlines()
    assert "op 6" in out[0]
    rows = out[2:]
    probed_results = int(next(row for row in rows if row.startswith("| result |")).split(" of ")[1].rstrip(" |"))
    assert 6 * 4 < probed_results <= 6 * 6  # six operations per problem: deeper than the default range
    assert {row.split(" | ")[0].lstrip("| ") for row in rows} == {
        "step name (the first)",
        "step name",
        "operand 1",
        "operand 2",
        "value 1",
        "value 2",
        "result",
        "end",
        "answer",
    }
    with pytest.raises(SystemExit):
        main([str(pretrained), "--task", "logic"])
    with pytest.raises(SystemExit):
        main([str(pretrained), "--op", "deep"])


def test_first_errors_are_where_teacher_forcing_first_goes_wrong(pretrained, capsys):
    """Greedy decoding follows the gold solution until the first token whose teacher-forced argmax is not the gold
    one: first_errors must place each problem's first error at that token's role and line."""
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    model = AutoModelForCausalLM.from_pretrained(pretrained, trust_remote_code=True).eval()
    for seed in range(3):
        counts = first_errors(model, tokenizer, "chains_link", n=1, seed=seed, op=(2, 3))
        example = next(get_task("chains_link").generate(seed, "train", op=(2, 3)))
        prompt_length = len(tokenizer(example.prompt).input_ids)
        encoded = tokenizer(example.text, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        with torch.no_grad():
            predicted = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        wrong = [i for i in range(prompt_length, len(ids)) if predicted[i - 1] != ids[i]]
        if not wrong:
            assert counts == {("right", ""): 1}
            continue
        at = encoded["offset_mapping"][wrong[0]][0]
        role = max((offset, role) for role, offset, _ in role_offsets(example) if offset <= at)[1]
        line = line_name(example, example.text[len(example.prompt) : at].count("\n"))
        assert counts == {(role, line): 1}, (example.text, counts)
    main([str(pretrained), "--task", "chains_plan", "--n", "2", "--op", "2", "--first-errors"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert sum(int(row.split(" | ")[-1].rstrip(" |")) for row in rows) == 2
