"""The final checkpoint's README.md: a Hub model card (YAML metadata with a model-index) that states how
the model was made and what the final evaluation measured."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
)

from ..modeling.configuration_cogfm import CogFMConfig
from ..tasks.export import EXPORT_VERSION

# What `import cogfm_hf` registers with peft (Llama's defaults), spelled out for a reader without the package.
LORA_DEFAULTS = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[CogFMConfig.model_type]
IA3_DEFAULTS = TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[CogFMConfig.model_type]
IA3_FEEDFORWARD_DEFAULTS = TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[CogFMConfig.model_type]
_METRIC_ORDER = ("exact_match", "self_corrected", "marker_rate", "false_marker_rate", "acc")


def result_rows(results: dict) -> list[dict]:
    """One row per (task or group, metric) of lm-eval results, groups first, each with its item count and, for
    generation tasks and their groups, the accuracy of always giving the most common gold answer of the items run
    (the bar a model that only learned the answer distribution clears)."""
    baselines = {}  # task -> (items, accuracy of its most common gold answer)
    for name, samples in results.get("samples", {}).items():
        answers = [s["doc"]["answer"] for s in samples if s.get("filter") == "extract_answer"]
        if answers:
            baselines[name] = (len(answers), Counter(answers).most_common(1)[0][1] / len(answers))
    rows = []
    for section in ("groups", "results"):
        for name, values in results.get(section, {}).items():
            if section == "results" and name in results.get("groups", {}):
                continue
            baseline = _baseline(name, baselines, results.get("group_subtasks", {}))
            for key, value in values.items():
                metric, _, filter_name = key.partition(",")
                if metric not in _METRIC_ORDER or not isinstance(value, (int, float)):
                    continue
                stderr = values.get(f"{metric}_stderr,{filter_name}")
                count = (
                    values.get("sample_count", {}).get(key)
                    if section == "groups"
                    else results.get("n-samples", {}).get(name, {}).get("effective")
                )
                rows.append(
                    dict(
                        name=name,
                        group=section == "groups",
                        metric=metric,
                        value=float(value),
                        stderr=stderr if isinstance(stderr, (int, float)) else None,
                        items=count,
                        baseline=baseline if metric == "exact_match" else None,
                    )
                )
    return rows


def _baseline(name: str, baselines: dict, group_subtasks: dict) -> float | None:
    """The most-common-answer accuracy of a task, or of a group over the items of all its tasks; None where a
    task has no extracted answers (self-correction, next step)."""
    leaves = [baselines.get(leaf) for leaf in leaf_names(name, group_subtasks)]
    if None in leaves:
        return None
    return sum(count * accuracy for count, accuracy in leaves) / sum(count for count, _ in leaves)


def leaf_names(name: str, group_subtasks: dict) -> list[str]:
    children = group_subtasks.get(name)
    return [leaf for child in children for leaf in leaf_names(child, group_subtasks)] if children else [name]


def _table(rows: list[dict]) -> str:
    lines = ["| task | metric | value | ± stderr | items | most common answer |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        stderr = f"{row['stderr']:.3f}" if row["stderr"] is not None else ""
        baseline = f"{row['baseline']:.3f}" if row["baseline"] is not None else ""
        name = f"**{row['name']}**" if row["group"] else row["name"]
        lines.append(
            f"| {name} | {row['metric']} | {row['value']:.3f} | {stderr} | {row['items'] or ''} | {baseline} |"
        )
    return "\n".join(lines)


def _modules(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def write_model_card(
    output: Path,
    *,
    recipe: dict,
    model,
    state,
    data_report: dict,
    results: dict | None,
    limit: int | None,
    plots: list[str],
    learned: str | None = None,
) -> Path:
    """`learned`: the before → after table by task family (summary.py) the card leads with, beside the plot of
    accuracy by difficulty."""
    params = sum(p.numel() for p in model.parameters())
    config = model.config
    # The defaults this model has modules for (in_proj only where a conv or Mamba-2 layer holds one).
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    lora_targets = [name for name in LORA_DEFAULTS if name in module_names]
    name = Path(recipe["training"]["output_dir"]).name
    rows = result_rows(results) if results else []
    eval_results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=row["name"],
            dataset_name=row["name"],
            metric_type=row["metric"],
            metric_value=round(row["value"], 4),
        )
        for row in rows
        if (row["group"] or row["baseline"] is not None) and math.isfinite(row["value"])
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license="apache-2.0",
        tags=["cogfm", "reasoning", "custom_code", "from-scratch"],
        model_name=name,
        eval_results=eval_results or None,
    )
    sources = data_report.get("sources", {})
    data_lines = ["| source | type | documents | tokens | share |", "|---|---|---:|---:|---:|"] + [
        f"| {source} | {info.get('type', '')} | {info.get('documents_out', 0):,} | {info.get('tokens_out', 0):,} | "
        f"{info.get('token_share', 0):.1%} |"
        for source, info in sources.items()
    ]
    by_task = data_report.get("tokens_by_task", {})
    packing = data_report.get("packing", {})
    totals = data_report.get("totals", {})
    tokens_seen = getattr(state, "num_input_tokens_seen", 0)
    pacing = recipe["curriculum"]["pacing"]
    if pacing == "uniform":
        order = "in random order"
    elif recipe["curriculum"].get("control"):
        order = f"in random order from a growing pool (the control of a `{pacing}` curriculum)"
    else:
        order = f"easy problems first (`{pacing}` curriculum pacing)"
    evaluation = (
        (
            f"lm-evaluation-harness on the tasks in `eval_tasks/` (test sets {EXPORT_VERSION}, held-out "
            f"solution templates, greedy decoding), {'the first ' + str(limit) if limit else 'all'} items of each "
            "task; a group (bold) counts the items of all its tasks. The headline, `cogfm_reasoning`, is exact "
            "match over the generation tasks of every family; *most common answer* is the accuracy of always "
            "giving the most common gold answer of the items run, the level a model that learned only the answer "
            "distribution reaches. Re-check any number with the command above (add `--limit` to match)."
        )
        if results
        else "No evaluation was run (`eval.enabled: false`)."
    )
    body = f"""
# {name}

A **CogFM** decoder-only language model (`{recipe["model"]["preset"]}` preset: {params:,} parameters,
{config.num_hidden_layers} layers, hidden size {config.hidden_size}, vocabulary {config.vocab_size:,}) trained from
random initialisation with cogfm_hf for {state.global_step:,} optimizer steps on
**{tokens_seen:,} non-padding tokens**, {order} and a self-correction loss.
It is a research artefact for studying how training order and learning from corrected mistakes change
multi-step reasoning, not a general assistant.
{f"{chr(10)}## What it learned{chr(10)}{chr(10)}{learned}{chr(10)}" if learned else ""}
{"![accuracy by difficulty](accuracy_by_difficulty.png)" if learned and "accuracy_by_difficulty.png" in plots else ""}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{name}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{name}", trust_remote_code=True)
prompt = "Mod 10. ka=3. ru=5. lo=ka*ru. Find lo.\\n"
output = model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=32, do_sample=False)
print(tokenizer.decode(output[0], skip_special_tokens=True))
```

Fine-tuning with peft: where `cogfm_hf` is not installed, peft has no default target modules for the model type
`cogfm`, so name them. CogFM's modules carry Llama's names and Llama's defaults fit (LoRA adds the `in_proj` of
convolution and Mamba-2 layers where a model has them): LoRA and its relatives (DoRA,
LoHa, LoKr, AdaLoRA) adapt {_modules(lora_targets)}; IA3 {_modules(IA3_DEFAULTS)} (feed-forward:
{_modules(IA3_FEEDFORWARD_DEFAULTS)}); prompt, prefix and p-tuning need none. `target_modules="all-linear"` adapts
every linear layer but the output head.

```python
from peft import IA3Config, LoraConfig, get_peft_model
lora = LoraConfig(task_type="CAUSAL_LM", target_modules={lora_targets!r})
ia3 = IA3Config(
    task_type="CAUSAL_LM", target_modules={IA3_DEFAULTS!r}, feedforward_modules={IA3_FEEDFORWARD_DEFAULTS!r}
)
peft_model = get_peft_model(model, lora)  # or ia3
```

```bash
lm_eval --model hf --model_args pretrained={name},trust_remote_code=True \\
    --include_path eval_tasks --tasks cogfm_all --device cpu
```

## Evaluation

{evaluation}

{_table(rows) if rows else ""}

{chr(10).join(f"![{Path(p).stem}]({p})" for p in plots)}

## Training

- Steps: {state.global_step:,}; non-padding tokens seen: {tokens_seen:,}; sequence length
  {packing.get("seq_len", "?")}.
- Objective: next-token cross-entropy with the self-correction loss (`loss` section below); curriculum
  `{recipe["curriculum"]["pacing"]}` pacing.
- Data: {totals.get("documents_out", 0):,} documents, {totals.get("tokens_out", 0):,} tokens, in
  {packing.get("sequences", 0):,} packed sequences (fill {packing.get("fill", 0):.1%}).

{chr(10).join(data_lines)}

Tokens by task: {", ".join(f"{task} {info['share']:.1%}" for task, info in by_task.items())}.

### Recipe

```yaml
{yaml.safe_dump(recipe, sort_keys=False).strip()}
```
"""
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    path = Path(output) / "README.md"
    path.write_text(str(card))
    return path


def read_data_report(data_dir: Path) -> dict:
    path = Path(data_dir) / "report.json"
    return json.loads(path.read_text()) if path.exists() else {}
