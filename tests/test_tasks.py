import random
import re
import statistics
import subprocess
import sys

import pytest

from cogfm_hf.paths import EVAL_TASKS_DIR
from cogfm_hf.tasks import BACK, TASKS, Mixture, add_retries, get_task, strip_retries
from cogfm_hf.tasks.base import is_held_out
from cogfm_hf.tasks.code import program_of, run_program
from cogfm_hf.tasks.export import export, next_step_records, render, self_correction_records, stale_files

TASK_NAMES = sorted(TASKS)
STEP_TASK_NAMES = [name for name in TASK_NAMES if TASKS[name].writes_steps]  # reasoning-gym's write no scratchpad


def take(generator, n):
    return [next(generator) for _ in range(n)]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_same_examples_different_seed_different(name):
    task = TASKS[name]
    first, again, other = (take(task.generate(seed), 20) for seed in (7, 7, 8))
    assert [e.text for e in first] == [e.text for e in again]
    assert [e.text for e in first] != [e.text for e in other]
    assert len({e.text for e in first}) > 15  # not one example repeated


@pytest.mark.parametrize("name", TASK_NAMES)
def test_verify_accepts_gold_in_free_text_and_rejects_wrong_answers(name):
    task = TASKS[name]
    for example in take(task.generate(3), 30):
        gold = example.answer
        for output in (
            example.solution,
            f"Answer: {gold}",
            f"so the answer is {gold}.",
            f"After working it out, the final answer is **{gold}**",
            f"{gold}",
            f"Let me think. The answer: {gold}\nDone.",
        ):
            assert task.verify(example, output), (output, gold)
        if name == "logic":
            wrong = [c for c in task.answer_candidates(example.prompt) if c != gold][0]
        else:
            wrong = str(int(gold) + 1)
        for output in (
            f"Answer: {wrong}",
            f"the answer is {wrong}",
            example.solution.replace(f"Answer: {gold}", f"Answer: {wrong}"),
            "I don't know.",
        ):
            assert not task.verify(example, output), (output, gold)


def test_code_answer_is_the_programs_real_output():
    task = TASKS["code"]
    examples = take(task.generate(11, statements=(1, 6), nesting=2), 40)
    for example in examples:
        assert run_program(program_of(example)) == example.answer
    # And an unrestricted CPython agrees, program by program.
    script = "\n".join(f"exec({program_of(e)!r}, {{}})" for e in examples)
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert printed.split() == [e.answer for e in examples]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_train_and_held_out_templates_are_disjoint(name):
    task = TASKS[name]
    train = {e.template_id for e in take(task.generate(0, "train", **task.train_knobs), 3000)}
    held_out = {e.template_id for e in take(task.generate(0, "heldout", **task.train_knobs), 600)}
    assert train and held_out and not train & held_out


def test_mixture_stream_never_yields_held_out_templates():
    mixture = Mixture([{"task": name} for name in TASK_NAMES], seed=0)
    assert not any(mixture.example(i).held_out for i in range(2000))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_solution_length_grows_with_difficulty(name):
    task = TASKS[name]
    low, high = task.train_knobs[task.difficulty_knob]
    means = []
    for level in range(low, high + 1):
        examples = take(task.generate(5, **{task.difficulty_knob: level}), 150)
        # Rule induction's difficulty is the pairs shown, reasoning-gym's has no scratchpad: their problem grows.
        means.append(
            statistics.mean(
                len(e.solution if task.difficulty_knob not in ("k", "level") else e.text) for e in examples
            )
        )
    assert all(a < b for a, b in zip(means, means[1:])), means


@pytest.mark.parametrize("name", ["logic", "code"])
def test_ood_buckets_keep_prompts_in_the_training_length_range(name):
    # Arithmetic and chains are the exceptions by design: more digits, or more necessary statements (chains has
    # too few distractors to drop), mean a longer prompt.
    task = TASKS[name]
    train_lengths = [len(e.prompt) for e in take(task.generate(1, "train", **task.train_knobs), 3000)]
    low, high = min(train_lengths), max(train_lengths)
    for bucket, (kind, overrides) in task.buckets.items():
        if kind != "ood":
            continue
        knobs = {**task.train_knobs, **overrides}
        lengths = [len(e.prompt) for e in take(task.generate(1, "heldout", **knobs), 300)]
        assert low <= min(lengths) and max(lengths) <= high, (bucket, min(lengths), max(lengths), low, high)
        assert knobs[task.difficulty_knob] > task.train_knobs[task.difficulty_knob][1]


@pytest.mark.parametrize("name", STEP_TASK_NAMES)
@pytest.mark.parametrize("variant", ["real", "weak"])
def test_stripping_retry_spans_restores_the_clean_solution(name, variant):
    task = TASKS[name]
    rng = random.Random(0)
    written = 0
    for example in take(task.generate(2), 100):
        retried = add_retries(example, task, 0.5, rng, variant)
        assert strip_retries(retried.solution, retried.error_spans, retried.marker_spans) == example.clean_solution()
        assert all(retried.solution[s:e] == BACK for s, e in retried.marker_spans)
        assert len(retried.error_spans) == len(retried.marker_spans)
        for (_, error_end), (marker_start, _) in zip(retried.error_spans, retried.marker_spans):
            assert error_end == marker_start  # each mistake is retracted right after it is written
        written += len(retried.error_spans)
        record = retried.to_record()  # spans re-based onto prompt + solution
        for s, e in record["marker_spans"]:
            assert record["text"][s:e] == BACK
    if variant == "weak" and name == "rules_map":  # one step: no later step's head to jump to
        assert written == 0
    else:
        assert written > 50


@pytest.mark.parametrize("name, p", [("arithmetic", 0.1), ("arithmetic", 0.3), ("code", 0.5)])
def test_observed_mistake_rate_matches_p(name, p):
    # These tasks always have a mistake to write, so the number of mistakes before a step is
    # geometric: P(at least one) = p and the mean is p / (1 - p).
    task = TASKS[name]
    rng = random.Random(1)
    steps = before_a_step = mistakes = 0
    for example in take(task.generate(4), 1500):
        retried = add_retries(example, task, p, rng)
        mistakes += len(retried.error_spans)
        steps += len(example.steps)
        before_a_step += sum(1 for _ in _steps_with_mistakes(retried))
    assert abs(before_a_step / steps - p) < 4 * (p * (1 - p) / steps) ** 0.5 + 0.005
    assert mistakes / steps == pytest.approx(p / (1 - p), rel=0.1)


def _steps_with_mistakes(retried):
    """Clean positions (in the stripped solution) at which one or more mistakes were written."""
    positions, removed = set(), 0
    for (s, e), (ms, me) in zip(retried.error_spans, retried.marker_spans):
        positions.add(s - removed)
        removed += (e - s) + (me - ms)
    return positions


def test_real_mistakes_are_what_each_task_promises():
    rng = random.Random(3)
    chains = next(TASKS["chains"].generate(0, op=6))
    for i in range(len(chains.steps)):
        wrong = TASKS["chains"].mistake(chains, i, rng)
        if wrong:  # names a variable whose operands are not all computed yet
            operator, operands = chains.meta["definitions"][wrong[:-1]]
            computed = {n for n, d in chains.meta["definitions"].items() if d is None} | set(chains.meta["order"][:i])
            assert not set(operands) <= computed
    arithmetic = next(TASKS["arithmetic"].generate(0, digits=4))
    for i, step in enumerate(arithmetic.steps):
        wrong = TASKS["arithmetic"].mistake(arithmetic, i, rng)
        assert step.startswith(wrong[: wrong.index("=") + 1]) and not step.startswith(wrong)


def test_planned_chains_write_the_walk_back_then_the_chains_solution():
    plan, chains, rng = TASKS["chains_plan"], TASKS["chains"], random.Random(5)
    for planned, original in zip(take(plan.generate(6, op=(1, 8)), 60), take(chains.generate(6, op=(1, 8)), 60)):
        assert (planned.prompt, planned.answer, planned.template_id) == (
            original.prompt,
            original.answer,
            original.template_id,
        )
        walk_length = original.difficulty + 1
        walk, operations = planned.steps[:walk_length], planned.steps[walk_length:]
        assert operations == original.steps
        statements = set(planned.prompt.splitlines())
        assert walk[0].split("=")[0] == planned.prompt.splitlines()[-1].removesuffix("=?")  # starts at the question
        for line, below in zip(walk, walk[1:]):
            assert line.rstrip("\n") in statements  # a statement of the prompt, copied
            assert below.split("=")[0] == re.split(r"[-+*]", line.split("=")[1])[0]  # the first operand
        assert walk[-1].rstrip("\n") in statements and walk[-1].split("=")[1].rstrip(".\n").isdigit()
        for i in range(walk_length):  # a mistake in the walk names another variable
            assert plan.mistake(planned, i, rng) != planned.meta["heads"][i]


def test_linked_chains_open_each_walk_line_with_its_user_the_one_key_to_what_follows():
    linked, plan, rng = TASKS["chains_link"], TASKS["chains_plan"], random.Random(5)
    for example, planned in zip(take(linked.generate(6, op=(1, 8)), 60), take(plan.generate(6, op=(1, 8)), 60)):
        assert (example.prompt, example.answer) == (planned.prompt, planned.answer)
        walk_length = example.difficulty + 1
        assert example.steps[walk_length:] == planned.steps[walk_length:] and ">" not in example.prompt
        users = ["?"] + [line.split("=")[0] for line in planned.steps[: walk_length - 1]]
        for line, planned_line, user in zip(example.steps[:walk_length], planned.steps, users):
            assert line == user + ">" + planned_line  # opened by the name it is an operand of, or by the question
        # After each operation, the one `>name=` in the text opens with the next operation's name, or `?` at the end.
        names = [line.split("=")[0].split(">")[-1] for line in example.steps[walk_length - 1 :]]
        for computed, following in zip(names, names[1:] + ["?"]):
            assert example.text.count(f">{computed}=") == 1
            linked_line = next(line for line in example.steps if f">{computed}=" in line)
            assert linked_line.split(">")[0] == following
        start, end = example.meta["results"][walk_length - 1]
        assert example.steps[walk_length - 1][start:end] == planned.steps[walk_length - 1].split("=")[1][:-2]
        for i in range(len(example.steps)):
            wrong = linked.mistake(example, i, rng)
            assert wrong is None or wrong != example.meta["heads"][i]
            if i < walk_length:
                assert wrong.split(">")[0] == example.meta["heads"][i].split(">")[0]


def test_weak_mistakes_name_a_later_step():
    task, rng = TASKS["chains"], random.Random(0)
    for example in take(task.generate(9, op=5), 50):
        retried = add_retries(example, task, 0.5, rng, "weak")
        for s, e in retried.error_spans:
            assert retried.solution[s:e] in example.meta["heads"]


@pytest.mark.parametrize(
    "name, knobs, knob",
    [
        ("chains", dict(op=-1), "op"),
        ("chains", dict(modulus=1), "modulus"),
        ("chains", dict(op=(5, 2)), "op"),
        ("chains", dict(distractors=-2), "distractors"),
        ("arithmetic", dict(digits=0), "digits"),
        ("arithmetic", dict(operation="/"), "operation"),
        ("addition", dict(operation="*"), "operation"),
        ("arithmetic", dict(order="reversed"), "order"),
        ("logic", dict(depth=0), "depth"),
        ("logic", dict(max_premises=0), "max_premises"),
        ("code", dict(nesting=3), "nesting"),
        ("code", dict(loop_count=0), "loop_count"),
        ("chains", dict(colour="red"), "colour"),
    ],
)
def test_bad_knob_values_raise_naming_the_knob(name, knobs, knob):
    with pytest.raises(ValueError, match=knob):
        next(get_task(name).generate(0, **knobs))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_retry_p_outside_range_is_rejected(p):
    task = TASKS["chains"]
    with pytest.raises(ValueError, match=r"retry p must be a number in \[0, 1\)"):
        add_retries(next(task.generate(0)), task, p, random.Random(0))
    with pytest.raises(ValueError, match="mixture component 0 .chains.: retry p"):
        Mixture([{"task": "chains", "retry_p": p}])


def test_mixture_is_deterministic_weighted_and_materialises():
    config = [
        {"task": "chains", "weight": 3, "difficulty": [2, 3], "retry_p": 0.3},
        {"task": "arithmetic", "weight": 1, "knobs": {"operation": "+"}},
    ]
    a, b = Mixture(config, seed=5), Mixture(config, seed=5)
    assert [a.example(i).text for i in range(50)] == [b.example(i).text for i in range(50)]
    assert a.example(17).text == b.example(17).text  # random access: a pure function of (seed, index)
    assert [a.example(i).text for i in range(20)] != [Mixture(config, seed=6).example(i).text for i in range(20)]
    dataset = a.to_dataset(400)
    assert set(dataset.column_names) >= {"text", "task", "difficulty", "template_id", "error_spans", "marker_spans"}
    share = dataset["task"].count("chains") / len(dataset)
    assert 0.68 < share < 0.82
    chains = dataset.filter(lambda r: r["task"] == "chains")
    assert set(chains["difficulty"]) == {2, 3}
    assert sum(len(s) for s in chains["error_spans"]) > 0
    arithmetic = dataset.filter(lambda r: r["task"] == "arithmetic")
    assert all("+" in p for p in arithmetic["prompt"]) and not any(arithmetic["error_spans"])
    for row in chains.select(range(20)):
        for s, e in row["marker_spans"]:
            assert row["text"][s:e] == BACK


def test_mixture_config_errors_name_the_component():
    with pytest.raises(ValueError, match="mixture component 1 .logic.: logic: knob 'depth'"):
        Mixture([{"task": "chains"}, {"task": "logic", "difficulty": 0}])
    with pytest.raises(ValueError, match="unknown task 'sudoku'"):
        Mixture([{"task": "sudoku"}])
    with pytest.raises(ValueError, match="unknown field"):
        Mixture([{"task": "chains", "wieght": 2}])


def test_exported_test_sets_are_reproducible_and_committed_up_to_date():
    assert render(TASKS, 5) == render(TASKS, 5)
    assert stale_files(EVAL_TASKS_DIR, TASKS, 200) == [], "run `python -m cogfm_hf.tasks export` and commit"


def test_self_correction_items_pair_a_planted_mistake_with_the_true_next_step():
    for task in (TASKS[name] for name in STEP_TASK_NAMES):
        records = self_correction_records(task, 40)
        assert len({r["id"] for r in records}) == 40 and [r["planted"] for r in records] == [True, False] * 20
        for planted, control in zip(records[::2], records[1::2]):
            assert is_held_out(planted["template_id"]) and planted["template_id"] == control["template_id"]
            assert planted["solution"].startswith(BACK) and BACK not in control["solution"]
            # The same partial solution, then a mistake or the true start of the next step; taking the
            # mistake back and going on gives the control's full text, whose answer line is the answer.
            mistake = planted["mistake"]
            partial = planted["prompt"][: -len(mistake)]
            assert planted["prompt"].endswith(mistake) and control["mistake"] is None
            assert not (partial + planted["solution"][len(BACK) :]).startswith(planted["prompt"])  # a real mistake
            assert partial + planted["solution"][len(BACK) :] == control["prompt"] + control["solution"]
            answer_line = control["solution"].rstrip("\n").rsplit("\n", 1)[-1]
            assert task.extract_answer(answer_line, control["answer_candidates"]) == control["answer"]


def test_next_step_items_offer_the_true_step_among_one_digit_variants():
    assert next_step_records(TASKS["arithmetic"], 5) is None  # its steps repeat their result: no fair distractors
    for name in ("chains", "code"):
        for record in next_step_records(TASKS[name], 40):
            choices, gold = record["choices"], record["choices"][record["gold"]]
            assert gold == record["answer"] and len(set(choices)) == len(choices) == 4
            for wrong in (c for c in choices if c != gold):
                differing = [i for i, (a, b) in enumerate(zip(wrong, gold)) if a != b]
                assert len(wrong) == len(gold) and len(differing) == 1 and wrong[differing[0]].isdigit()


def test_stale_files_reports_edits_and_leftovers(tmp_path):
    export(tmp_path, TASKS, 3)
    assert stale_files(tmp_path, TASKS, 3) == []
    (tmp_path / "generated" / "cogfm_chains_op2.yaml").write_text("task: edited\n")
    (tmp_path / "data" / "chains_op99.jsonl").write_text("{}\n")
    assert stale_files(tmp_path, TASKS, 3) == ["generated/cogfm_chains_op2.yaml", "data/chains_op99.jsonl"]
    export(tmp_path, TASKS, 3)  # re-exporting repairs the edit and removes the leftover
    assert stale_files(tmp_path, TASKS, 3) == [] and not (tmp_path / "data" / "chains_op99.jsonl").exists()


def test_reexport_removes_task_yamls_left_at_the_old_top_level(tmp_path):
    """Exports before `generated/` wrote the task and group YAMLs at the top of eval_tasks/: lm-eval would find
    each task twice, so they count as leftovers."""
    export(tmp_path, TASKS, 3)
    for name in ("cogfm_chains_op2.yaml", "_cogfm_chains.yaml"):
        (tmp_path / name).write_bytes((tmp_path / "generated" / name).read_bytes())
    assert stale_files(tmp_path, TASKS, 3) == ["_cogfm_chains.yaml", "cogfm_chains_op2.yaml"]
    export(tmp_path, TASKS, 3)
    assert stale_files(tmp_path, TASKS, 3) == [] and not list(tmp_path.glob("*.yaml"))
