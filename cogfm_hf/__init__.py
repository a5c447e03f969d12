"""cogfm_hf: train CogFM, a reasoning-focused decoder-only LM, from scratch with the Hugging Face stack.

Importing the package registers CogFM with transformers' Auto classes and gives every peft method Llama's
default target modules for it, so `AutoModelForCausalLM.from_config(CogFMConfig(...))` and
`get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))` (or IA3Config, LoHaConfig...) work like they do for
built-in models. Where the package is not installed peft has no defaults for CogFM: name the modules (the model
card lists them).
"""

from peft.utils import constants as peft_constants
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .modeling.configuration_cogfm import PRESETS, CogFMConfig
from .modeling.modeling_cogfm import (
    CogFMForCausalLM,
    CogFMForSequenceClassification,
    CogFMForTokenClassification,
    CogFMModel,
    CogFMPreTrainedModel,
)

AutoConfig.register(CogFMConfig.model_type, CogFMConfig, exist_ok=True)
AutoModel.register(CogFMConfig, CogFMModel, exist_ok=True)
AutoModelForCausalLM.register(CogFMConfig, CogFMForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(CogFMConfig, CogFMForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(CogFMConfig, CogFMForTokenClassification, exist_ok=True)

# CogFM's modules carry Llama's names (q_proj ... down_proj, input_layernorm...), so each peft method's defaults
# for Llama fit CogFM. peft looks them up by model_type in module-level dicts its tuners hold references to:
# they are filled in place.
for _name, _mapping in vars(peft_constants).items():
    if _name.startswith("TRANSFORMERS_MODELS_TO_") and isinstance(_mapping, dict) and "llama" in _mapping:
        _mapping.setdefault(CogFMConfig.model_type, _mapping["llama"])
# LoRA also adapts the input projection of the `conv` and Mamba-2 mixers (`in_proj`), which carry the only
# token-mixing projection of those layers; a model without such layers adapts Llama's q_proj and v_proj alone.
peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[CogFMConfig.model_type] = [
    "q_proj",
    "v_proj",
    "in_proj",
]

__version__ = "0.1.0"
__all__ = [
    "CogFMConfig",
    "CogFMModel",
    "CogFMForCausalLM",
    "CogFMForSequenceClassification",
    "CogFMForTokenClassification",
    "CogFMPreTrainedModel",
    "PRESETS",
]
