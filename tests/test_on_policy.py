"""On-policy self-correction data: mistakes drawn from a trained checkpoint's own distribution leave the right text,
follow the model's law of first departures, and go through the mixture and the ablation runner like the other
variants."""

import random
from collections import Counter

import pytest
import yaml

from cogfm_hf.config import RecipeError
from cogfm_hf.experiments.arms import arm_recipe, load_ablation, merged_changes, run_name
from cogfm_hf.paths import REPOSITORY
from cogfm_hf.tasks import BACK, Mixture, add_retries, get_task, strip_retries
from cogfm_hf.tasks.on_policy import ModelMistakes


def take(generator, n):
    return [next(generator) for _ in range(n)]


@pytest.fixture(scope="module")
def model_mistakes(pretrained):
    return ModelMistakes(pretrained)


def test_a_model_mistake_is_the_right_step_up_to_one_wrong_token(model_mistakes):
    task = get_task("arithmetic")
    written = 0
    for example in take(task.generate(3, digits=(1, 2)), 20):
        for index, step in enumerate(example.steps):
            mistake = model_mistakes.mistake(example, index, random.Random(index))
            assert mistake == model_mistakes.mistake(example, index, random.Random(index))  # a function of the rng
            if mistake is None:
                continue
            written += 1
            assert not step.startswith(mistake), (step, mistake)  # it leaves the right text ...
            right_part = max(n for n in range(len(mistake)) if step.startswith(mistake[:n]))
            # ... with its last token, every special token excluded
            tail = mistake[right_part:]
            assert tail in model_mistakes.ids_of_text and BACK not in tail and "<|eos|>" not in tail
    assert written > 20


def test_first_departures_follow_the_model_token_by_token(model_mistakes):
    """The closed form (one draw per mistake) against writing the step token by token from the same teacher-forced
    distributions until a token leaves the right text, redrawing the step when none does."""
    example = next(get_task("arithmetic").generate(5, digits=2, operation="+"))
    text, probabilities, offsets = model_mistakes._forward(example)
    start = len(example.prompt)
    positions = [t for t, (first, _) in enumerate(offsets) if start <= first < start + len(example.steps[0])]
    rng = random.Random(0)

    def token_by_token() -> str:
        while True:
            for t in positions:
                row = probabilities[t - 1].tolist()
                token = rng.choices(range(len(row)), weights=row)[0]
                if token not in model_mistakes.keeps_to(text[offsets[t][0] :]):
                    return text[start : offsets[t][0]] + model_mistakes.token_text[token]

    draws = 3000
    closed_form = Counter(len(model_mistakes.mistake(example, 0, rng)) for _ in range(draws))
    sequential = Counter(len(token_by_token()) for _ in range(draws))
    total_variation = sum(abs(closed_form[k] - sequential[k]) for k in closed_form | sequential) / (2 * draws)
    assert len(sequential) > 1  # the departure is not always at the same place, so the law is tested
    assert total_variation < 0.06, (closed_form, sequential)


def test_on_policy_retries_strip_back_to_the_clean_solution(pretrained):
    mixture = Mixture(
        [
            {
                "task": "arithmetic",
                "difficulty": [1, 2],
                "retry_p": 0.5,
                "retry_variant": "on_policy",
                "retry_model": str(pretrained),
            }
        ],
        seed=1,
    )
    written = 0
    for index in range(30):
        example = mixture.example(index)
        assert mixture.example(index).solution == example.solution  # example i is a function of (seed, i)
        clean = strip_retries(example.solution, example.error_spans, example.marker_spans)
        assert clean == example.clean_solution()
        written += len(example.error_spans)
    assert written > 10


def test_on_policy_needs_its_model_and_only_it_takes_one(pretrained, tmp_path):
    with pytest.raises(ValueError, match="mixture component 0 .arithmetic.: retry_model .* give both or neither"):
        Mixture([{"task": "arithmetic", "retry_p": 0.3, "retry_variant": "on_policy"}])
    with pytest.raises(ValueError, match="mixture component 0 .arithmetic.: retry_model .* give both or neither"):
        Mixture([{"task": "arithmetic", "retry_p": 0.3, "retry_model": str(pretrained)}])
    with pytest.raises(ValueError, match=f"retry_model {tmp_path}: not a checkpoint with its tokenizer"):
        Mixture([{"task": "arithmetic", "retry_p": 0.3, "retry_variant": "on_policy", "retry_model": str(tmp_path)}])
    task = get_task("arithmetic")
    example = next(task.generate(0))
    with pytest.raises(ValueError, match="on_policy variant, and only it, draws its mistakes from a model"):
        add_retries(example, task, 0.3, random.Random(0), "on_policy")


def test_the_on_policy_arm_writes_the_mistakes_of_its_sources_model_of_the_same_seed(tmp_path):
    recipe_path = REPOSITORY / "training" / "recipes" / "generalisation-retry.yaml"
    config, base = load_ablation(recipe_path)
    choices = {"best_retry": "retry_p0.3"}
    changes = merged_changes(config, "retry_on_policy", choices)
    assert changes["retry_p"] == 0.3 and changes["retry_variant"] == "on_policy"
    assert changes["retry_model"] == "baseline"
    baseline_run = tmp_path / "runs" / run_name("baseline", 5e-4, 2)
    common = dict(
        seed=2, learning_rate=5e-4, run_dir=tmp_path / "run", data_root=tmp_path / "data", tokenizer_dir=None
    )
    recipe = arm_recipe(base, changes, retry_model_dir=baseline_run, **common)
    component = recipe["data"]["sources"][0]["mixture"][0]
    assert (component["retry_variant"], component["retry_model"]) == ("on_policy", str(baseline_run))
    with pytest.raises(ValueError, match="give retry_model_dir exactly when the arm's changes name a retry_model"):
        arm_recipe(base, changes, **common)

    text = recipe_path.read_text()
    (tmp_path / "generalisation-base.yaml").write_text((recipe_path.parent / "generalisation-base.yaml").read_text())
    edited = yaml.safe_load(text)
    edited["arms"]["retry_on_policy"].pop("retry_model")
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(RecipeError, match="arms.retry_on_policy.retry_model: retry_variant on_policy draws"):
        load_ablation(tmp_path / "edited.yaml")
    edited["arms"]["retry_on_policy"]["retry_model"] = "retry_on_policy"
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(RecipeError, match="arms.retry_on_policy.retry_model: 'retry_on_policy' is not another arm"):
        load_ablation(tmp_path / "edited.yaml")


def test_the_on_policy_model_is_part_of_a_data_builds_fingerprint(pretrained, tmp_path):
    from cogfm_hf.data.recipe import DataRecipe

    component = {"task": "arithmetic", "retry_p": 0.1}
    recipe = {"output_dir": str(tmp_path), "sources": [{"name": "t", "type": "tasks", "num_examples": 10}]}
    plain = DataRecipe.from_dict({**recipe, "sources": [{**recipe["sources"][0], "mixture": [component]}]})
    on_policy = {**component, "retry_variant": "on_policy", "retry_model": str(pretrained)}
    drawn = DataRecipe.from_dict({**recipe, "sources": [{**recipe["sources"][0], "mixture": [on_policy]}]})
    assert drawn.fingerprint() != plain.fingerprint()
