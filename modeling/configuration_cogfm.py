"""CogFM model configuration.

This file is copied into every checkpoint, so it imports only transformers and stays flat.
"""

from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

# The mixer each decoder layer can use. Only full causal self-attention exists today; the
# per-layer list (and `DynamicCache(config=...)`, which lays out caches from it) leaves room for
# SSM or short-convolution mixers later without changing the checkpoint format.
SUPPORTED_LAYER_TYPES = ("full_attention",)

# Named sizes. Parameter counts (counted on the meta device by `python -m cogfm_hf.presets`) are
# what the names promise; the tests hold each preset to its tolerance. The larger presets follow
# Llama-style ratios (SwiGLU width ~2.7x hidden, 4:1 grouped-query attention).
PRESETS = {
    "cogfm-tiny": dict(  # ~5 M parameters: the CPU default
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),
    "cogfm-125m": dict(
        vocab_size=32768,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    ),
    "cogfm-1b": dict(
        vocab_size=32768,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    ),
    "cogfm-6b": dict(
        vocab_size=32768,
        hidden_size=4096,
        intermediate_size=11264,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        qk_norm=True,
    ),
}


class CogFMConfig(PreTrainedConfig):
    r"""
    Configuration of a CogFM decoder-only language model.

    CogFM is a pre-norm transformer: RMSNorm, rotary position embeddings, grouped-query attention
    (optionally with RMSNorm on queries and keys, "QK-norm", for stability at scale), a SwiGLU MLP,
    no biases, and optionally tied input/output embeddings.

    Initialisation (from scratch): every linear and embedding weight is drawn from
    normal(0, `initializer_range`), except the two projections that write into the residual stream
    (attention `o_proj`, MLP `down_proj`), whose standard deviation is further divided by
    sqrt(2 * num_hidden_layers) so the residual stream's variance does not grow with depth
    (GPT-2 / OLMo). Norm weights start at 1.

    Args:
        vocab_size: number of token ids.
        hidden_size: width of the residual stream.
        intermediate_size: width of the SwiGLU MLP.
        num_hidden_layers: number of decoder layers.
        num_attention_heads: query heads per layer.
        num_key_value_heads: key/value heads (grouped-query attention); defaults to
            `num_attention_heads` (plain multi-head attention). Must divide `num_attention_heads`.
        head_dim: width of one head; defaults to `hidden_size // num_attention_heads`. Must be even (RoPE).
        max_position_embeddings: longest sequence the model is meant to see.
        rope_theta: base of the rotary embedding frequencies.
        rope_parameters: transformers' RoPE parameters, for a scaled variant (long context), e.g.
            `{"rope_type": "linear", "factor": 4.0}`; any `rope_type` of transformers' rope utilities (linear,
            dynamic, yarn, longrope, llama3...). Defaults to plain RoPE with `rope_theta`; after construction it
            always holds `rope_type` and `rope_theta`.
        rms_norm_eps: epsilon of every RMSNorm.
        initializer_range: standard deviation of the weight init (see above).
        tie_word_embeddings: share the input embedding matrix with the output head.
        qk_norm: apply a per-head RMSNorm to queries and keys before RoPE.
        attention_dropout: dropout on attention probabilities while training.
        layer_types: the mixer of each layer; defaults to `"full_attention"` everywhere.
        use_cache: return a KV cache from forward by default (generation).

    Example:

    ```python
    >>> from cogfm_hf import CogFMConfig, CogFMForCausalLM
    >>> config = CogFMConfig.from_preset("cogfm-tiny")
    >>> model = CogFMForCausalLM(config)
    ```
    """

    model_type = "cogfm"
    keys_to_ignore_at_inference = ["past_key_values"]
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rope_parameters: dict | None = None
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    qk_norm: bool = False
    attention_dropout: float = 0.0
    layer_types: list[str] | None = None
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        # Checked here rather than in `validate_*` hooks so callers get a plain ValueError naming the field.
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self._check_sizes()
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"CogFMConfig.num_attention_heads ({self.num_attention_heads}) must divide hidden_size "
                    f"({self.hidden_size}); choose a head count that divides it, or set head_dim explicitly."
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise ValueError(
                f"CogFMConfig.head_dim must be even (RoPE rotates pairs of channels), got {self.head_dim}; "
                "change num_attention_heads or set head_dim."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"CogFMConfig.num_key_value_heads ({self.num_key_value_heads}) must divide num_attention_heads "
                f"({self.num_attention_heads}); e.g. {self.num_attention_heads} (multi-head) or 1 (multi-query)."
            )
        if self.layer_types is None:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        self._check_layer_types()
        super().__post_init__(**kwargs)  # standardises rope_parameters: rope_type, and rope_theta unless given
        rope_type = self.rope_parameters["rope_type"]
        if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(
                f"CogFMConfig.rope_parameters has rope_type {rope_type!r}, which transformers does not implement; "
                f"use 'default' or one of {sorted(ROPE_INIT_FUNCTIONS)}."
            )
        self.rope_theta = self.rope_parameters["rope_theta"]  # one value, whichever way it was given

    def _check_sizes(self):
        for field in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "head_dim",
        ):
            value = getattr(self, field)
            if value is None and field == "head_dim":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"CogFMConfig.{field} must be a positive integer, got {value!r}.")
        for field in ("rope_theta", "rms_norm_eps", "initializer_range"):
            if not getattr(self, field) > 0:
                raise ValueError(f"CogFMConfig.{field} must be > 0, got {getattr(self, field)!r}.")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"CogFMConfig.attention_dropout must be in [0, 1), got {self.attention_dropout!r}.")

    def _check_layer_types(self):
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"CogFMConfig.layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
                f"{self.num_hidden_layers}; give one entry per layer."
            )
        for index, layer_type in enumerate(self.layer_types):
            if layer_type not in SUPPORTED_LAYER_TYPES:
                raise ValueError(
                    f"CogFMConfig.layer_types[{index}] is {layer_type!r}, which CogFM does not implement; "
                    f"use one of {SUPPORTED_LAYER_TYPES}."
                )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "CogFMConfig":
        """Build the config of a named size (see `PRESETS`); keyword arguments override its fields."""
        if name not in PRESETS:
            raise ValueError(f"Unknown CogFM preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})


# `save_pretrained` then copies this file into the checkpoint and writes `auto_map["AutoConfig"]`,
# so the checkpoint loads with trust_remote_code=True where this package is not installed.
CogFMConfig.register_for_auto_class()

__all__ = ["CogFMConfig", "PRESETS", "SUPPORTED_LAYER_TYPES"]
