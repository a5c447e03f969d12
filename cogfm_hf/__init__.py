"""cogfm_hf: train CogFM, a reasoning-focused decoder-only LM, from scratch with the Hugging Face stack.

Importing the package registers CogFM with transformers' Auto classes and gives peft default LoRA
target modules for it, so `AutoModelForCausalLM.from_config(CogFMConfig(...))` and
`get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))` work like they do for built-in models.
"""

from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .modeling.configuration_cogfm import PRESETS, CogFMConfig
from .modeling.modeling_cogfm import CogFMForCausalLM, CogFMModel, CogFMPreTrainedModel

AutoConfig.register(CogFMConfig.model_type, CogFMConfig, exist_ok=True)
AutoModel.register(CogFMConfig, CogFMModel, exist_ok=True)
AutoModelForCausalLM.register(CogFMConfig, CogFMForCausalLM, exist_ok=True)

# peft looks model types up in this dict; it must be mutated in place (other modules hold references).
TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault(CogFMConfig.model_type, ["q_proj", "v_proj"])

__version__ = "0.1.0"
__all__ = ["CogFMConfig", "CogFMModel", "CogFMForCausalLM", "CogFMPreTrainedModel", "PRESETS"]
