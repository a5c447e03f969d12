"""CogFM model configuration.

This file is copied into every checkpoint, so it imports only transformers and stays flat.
"""

from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

# The mixer of each decoder layer, named as transformers' cache and mask tables name the state it keeps, so
# `DynamicCache(config=...)` lays out the right cache per layer:
#   full_attention    causal self-attention (keys and values)
#   conv              gated short convolution, as LFM2's (a convolution state)
#   linear_attention  Mamba-2, as Falcon-H1's SSM branch (a convolution and an SSM state)
#   hybrid            self-attention and Mamba-2 side by side on the same input, their outputs summed (Falcon-H1)
SUPPORTED_LAYER_TYPES = ("full_attention", "conv", "linear_attention", "hybrid")
ATTENTION_LAYER_TYPES = ("full_attention", "hybrid")
SSM_LAYER_TYPES = ("linear_attention", "hybrid")
# Canon layers (Physics of Language Models Part 4.1): residual causal depthwise convolutions at
#   A  the mixer's input, after the first norm      B  attention's queries, keys and values, before RoPE
#   C  the MLP's input, after the second norm       D  the MLP's gate and up projections, before SiLU
CANON_POINTS = "ABCD"
# Each mixer setting: the mixer that reads it, and its default there (None: 2 * hidden_size, Mamba-2's expansion).
MIXER_DEFAULTS = {
    "canon_kernel": ("canon", 4),  # Part 4.1's kernel
    "conv_kernel": ("conv", 3),  # LFM2's
    "mamba_d_ssm": ("ssm", None),
    "mamba_d_head": ("ssm", 64),
    "mamba_d_state": ("ssm", 64),
    "mamba_n_groups": ("ssm", 1),
    "mamba_d_conv": ("ssm", 4),  # Mamba-2's
    "mamba_chunk_size": ("ssm", 64),  # short: the torch scan's cost grows with the chunk
}
MIXER_USERS = {
    "canon": "canon_set is empty",
    "conv": "no layer is 'conv'",
    "ssm": "no layer is 'linear_attention' or 'hybrid'",
}

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
# Other mixers at the sizes of the attention-only presets they are compared with (the tests hold each within 5%).
PRESETS.update(
    {
        # Canon layers at every point of every layer (Physics of LMs Part 4.1's "ABCD"): ~1% more parameters.
        "cogfm-tiny-canon": dict(PRESETS["cogfm-tiny"], canon_set="ABCD"),
        # Falcon-H1's layout at CPU size: every layer runs attention and a Mamba-2 branch side by side; the MLP is
        # narrower so the parameters match cogfm-tiny's.
        "cogfm-tiny-hybrid": dict(
            PRESETS["cogfm-tiny"],
            intermediate_size=512,
            layer_types=["hybrid"] * 6,
            mamba_d_ssm=256,
            mamba_d_head=32,
            mamba_d_state=16,
        ),
        # Falcon-H1-like at 6B: attention and Mamba-2 side by side in every layer, with Falcon-H1's large SSM share
        # (an SSM 1.5x as wide as the residual stream, with 128-wide states, beside 4:1 grouped-query attention);
        # 25 layers and a narrower MLP keep it at 6B.
        "cogfm-6b-hybrid": dict(
            PRESETS["cogfm-6b"],
            intermediate_size=8192,
            num_hidden_layers=25,
            layer_types=["hybrid"] * 25,
            mamba_d_ssm=6144,
            mamba_d_head=64,
            mamba_d_state=128,
            mamba_n_groups=8,
        ),
    }
)


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
            always holds `rope_type` and `rope_theta`. `{"partial_rotary_factor": f}` rotates only the first
            f x head_dim channels of each head (partial RoPE; 0 is NoPE: attention by content alone, positions
            then come only from the causal mask and any Canon layers).
        rms_norm_eps: epsilon of every RMSNorm.
        initializer_range: standard deviation of the weight init (see above).
        tie_word_embeddings: share the input embedding matrix with the output head.
        qk_norm: apply a per-head RMSNorm to queries and keys before RoPE.
        attention_dropout: dropout on attention probabilities while training.
        layer_types: the mixer of each layer, one of `SUPPORTED_LAYER_TYPES` (see there); defaults to
            `"full_attention"` everywhere. At least one layer must attend (`full_attention` or `hybrid`).
        canon_set: where Canon layers sit in every layer, any of the letters "ABCD" (see `CANON_POINTS`), e.g.
            "ABCD" (all four, the paper's default) or "" (none). B applies to attention (`full_attention`, `hybrid`);
            the `conv` and `linear_attention` mixers already convolve their projections.
        The settings below belong to one mixer each; they default where it is used and are refused where not.
        canon_kernel: kernel size of the Canon convolutions (default 4, the paper's).
        conv_kernel: kernel size of the `conv` mixer's convolution (default 3, LFM2's).
        mamba_d_ssm: inner width of the Mamba-2 mixer; defaults to 2 * hidden_size (Mamba-2's expansion).
        mamba_d_head: width of one SSM head (default 64); must divide `mamba_d_ssm`.
        mamba_d_state: size of the SSM state per head (default 64).
        mamba_n_groups: groups sharing one B and C projection, as grouped-query attention (default 1); must divide
            the heads.
        mamba_d_conv: kernel size of the Mamba-2 convolution over x, B and C (default 4).
        mamba_chunk_size: chunk length of the chunked SSD scan in training and prefill (default 64).
        position_coupling: RoPE positions from the tokens instead of the sequence index, for column-by-column
            arithmetic (coupling_cogfm.py has the rule): `{"digit_token_ids": [ten ids, "0" to "9"],
            "newline_token_id": id, "stride": positions per column}`, optionally `"train_column_gap": G` (training
            spreads each document's columns by a random gap of 1..G), `"train_column_offset": O` (training moves
            each document's columns by a random 0..O columns), `"canon": False` (Canon layers pass coupled tokens
            through unchanged) and `"back_token_id"` (the self-correction
            marker restarts a step's places) and `"operator_token_ids"`: [ids] (couple only documents whose first
            line is a sum, digits and these tokens; every other document keeps ordinary positions); None (the
            default) keeps Llama's positions.
        train_position_stretch: in training, each token's RoPE position advances by a random 1..S from the one
            before it in its document, instead of by 1 (randomised positions, Ruoss et al. 2023, arXiv 2305.16843),
            so that the distance between two tokens no longer says how many tokens lie between them: a model
            cannot count steps by distance and has to find what it needs by content. Evaluation and generation keep
            ordinary positions, whose distances training showed too. 1 (the default) keeps Llama's positions; not
            with `position_coupling`, which has its own training spreads.
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
    canon_set: str = ""
    canon_kernel: int | None = None
    conv_kernel: int | None = None
    mamba_d_ssm: int | None = None
    mamba_d_head: int | None = None
    mamba_d_state: int | None = None
    mamba_n_groups: int | None = None
    mamba_d_conv: int | None = None
    mamba_chunk_size: int | None = None
    position_coupling: dict | None = None
    train_position_stretch: int = 1
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
        self._check_mixers()
        self._check_position_coupling()
        stretch = self.train_position_stretch
        if isinstance(stretch, bool) or not isinstance(stretch, int) or stretch < 1:
            raise ValueError(
                f"CogFMConfig.train_position_stretch must be an integer >= 1 (1: ordinary positions), got {stretch!r}."
            )
        if stretch > 1 and self.position_coupling is not None:
            raise ValueError(
                "CogFMConfig.train_position_stretch and position_coupling both set the training positions; use "
                "position_coupling's train_column_gap / train_column_offset, or leave train_position_stretch at 1."
            )
        super().__post_init__(**kwargs)  # standardises rope_parameters: rope_type, and rope_theta unless given
        rope_type = self.rope_parameters["rope_type"]
        if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(
                f"CogFMConfig.rope_parameters has rope_type {rope_type!r}, which transformers does not implement; "
                f"use 'default' or one of {sorted(ROPE_INIT_FUNCTIONS)}."
            )
        self.rope_theta = self.rope_parameters["rope_theta"]  # one value, whichever way it was given
        factor = self.rope_parameters.get("partial_rotary_factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor <= 1:
            raise ValueError(
                "CogFMConfig.rope_parameters['partial_rotary_factor'] is the share of each head's channels that "
                f"rotate: a number in [0, 1] (0: no position embedding, NoPE), got {factor!r}."
            )
        if int(self.head_dim * factor) % 2:
            raise ValueError(
                f"CogFMConfig.rope_parameters['partial_rotary_factor'] {factor} rotates {int(self.head_dim * factor)} "
                f"of head_dim {self.head_dim} channels; RoPE rotates pairs, so choose a factor giving an even count."
            )

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
        if not set(self.layer_types) & set(ATTENTION_LAYER_TYPES):
            raise ValueError(
                f"CogFMConfig.layer_types has no attention layer ({self.layer_types}); make at least one layer "
                "'full_attention' or 'hybrid': generation reads the sequence length from an attention cache."
            )

    def _check_mixers(self):
        if not isinstance(self.canon_set, str) or set(self.canon_set) - set(CANON_POINTS):
            raise ValueError(
                f"CogFMConfig.canon_set must be a string of the letters {CANON_POINTS!r} (where Canon layers sit), "
                f"got {self.canon_set!r}; e.g. 'ABCD' for all four points or '' for none."
            )
        if len(set(self.canon_set)) != len(self.canon_set):
            raise ValueError(f"CogFMConfig.canon_set names a point twice: {self.canon_set!r}.")
        # A mixer's settings take their defaults where the mixer is used, and are refused where it is not: a value
        # the model would never read is a mistake in the config.
        used = {
            "canon": bool(self.canon_set),
            "conv": "conv" in self.layer_types,
            "ssm": bool(set(self.layer_types) & set(SSM_LAYER_TYPES)),
        }
        for field, (mixer, default) in MIXER_DEFAULTS.items():
            if not used[mixer]:
                if getattr(self, field) is not None:
                    raise ValueError(
                        f"CogFMConfig.{field} is set ({getattr(self, field)!r}) but no layer uses it: "
                        f"{MIXER_USERS[mixer]}; remove it or add such a layer."
                    )
            elif getattr(self, field) is None:
                setattr(self, field, default if default is not None else 2 * self.hidden_size)
        for field, mixer in (("canon_kernel", "canon"), ("conv_kernel", "conv")):
            if used[mixer]:
                self._check_kernel(field)
        if used["ssm"]:
            self._check_ssm()

    def _check_position_coupling(self):
        coupling = self.position_coupling
        if coupling is None:
            return
        keys = ("digit_token_ids", "newline_token_id", "stride")
        optional = ("train_column_gap", "train_column_offset", "canon", "back_token_id", "operator_token_ids")
        if not isinstance(coupling, dict) or not set(keys) <= set(coupling) <= set(keys + optional):
            raise ValueError(
                f"CogFMConfig.position_coupling must be None or a dict with {keys} (and optionally {optional}), "
                f"got {coupling!r}."
            )
        ids = coupling["digit_token_ids"]
        in_vocabulary = lambda i: isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.vocab_size  # noqa: E731
        if not isinstance(ids, list) or len(ids) != 10 or len(set(ids)) != 10 or not all(map(in_vocabulary, ids)):
            raise ValueError(
                "CogFMConfig.position_coupling.digit_token_ids must list the ten distinct token ids of '0'..'9' "
                f"(each below vocab_size {self.vocab_size}), got {ids!r}."
            )
        if not in_vocabulary(coupling["newline_token_id"]) or coupling["newline_token_id"] in ids:
            raise ValueError(
                "CogFMConfig.position_coupling.newline_token_id must be the id of the newline token (below "
                f"vocab_size, not a digit), got {coupling['newline_token_id']!r}."
            )
        stride = coupling["stride"]
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 3:
            raise ValueError(
                "CogFMConfig.position_coupling.stride must be an integer >= 3 (positions per digit column: longer "
                f"than a scratchpad line's tokens), got {stride!r}."
            )
        back = coupling.get("back_token_id")
        if "back_token_id" in coupling and (
            not in_vocabulary(back) or back in ids or back == coupling["newline_token_id"]
        ):
            raise ValueError(
                "CogFMConfig.position_coupling.back_token_id must be the id of the self-correction marker (below "
                f"vocab_size, not a digit or the newline), got {back!r}."
            )
        gap = coupling.get("train_column_gap", 1)
        if not isinstance(gap, int) or isinstance(gap, bool) or gap < 1:
            raise ValueError(
                "CogFMConfig.position_coupling.train_column_gap must be an integer >= 1 (1: no spreading), "
                f"got {gap!r}."
            )
        offset = coupling.get("train_column_offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(
                "CogFMConfig.position_coupling.train_column_offset must be an integer >= 0 (0: columns start at 0), "
                f"got {offset!r}."
            )
        if "canon" in coupling and (not isinstance(coupling["canon"], bool) or not self.canon_set):
            raise ValueError(
                "CogFMConfig.position_coupling.canon says whether Canon layers act on coupled tokens: a bool, and "
                f"only with canon_set (this config has canon_set={self.canon_set!r}); got {coupling['canon']!r}."
            )
        operators = coupling.get("operator_token_ids")
        if "operator_token_ids" in coupling and (
            not isinstance(operators, list)
            or not operators
            or not all(map(in_vocabulary, operators))
            or set(operators) & {*ids, coupling["newline_token_id"]}
        ):
            raise ValueError(
                "CogFMConfig.position_coupling.operator_token_ids must list the ids of the tokens besides digits a "
                f"sum's first line holds (below vocab_size, not digits or the newline), got {operators!r}."
            )

    def _check_kernel(self, field: str):
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"CogFMConfig.{field} must be an integer >= 2 (a convolution kernel), got {value!r}.")

    def _check_ssm(self):
        self._check_kernel("mamba_d_conv")
        for field in ("mamba_d_ssm", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_chunk_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"CogFMConfig.{field} must be a positive integer, got {value!r}.")
        if self.mamba_d_ssm % self.mamba_d_head:
            raise ValueError(
                f"CogFMConfig.mamba_d_head ({self.mamba_d_head}) must divide mamba_d_ssm ({self.mamba_d_ssm}); "
                "the SSM width is split into heads of that width."
            )
        if (self.mamba_d_ssm // self.mamba_d_head) % self.mamba_n_groups:
            raise ValueError(
                f"CogFMConfig.mamba_n_groups ({self.mamba_n_groups}) must divide the SSM heads "
                f"(mamba_d_ssm / mamba_d_head = {self.mamba_d_ssm // self.mamba_d_head})."
            )

    @property
    def keeps_convolution_state(self) -> bool:
        """Whether some layer convolves over the sequence (Canon layers, `conv`, Mamba-2), and so keeps a state."""
        return bool(self.canon_set) or set(self.layer_types) != {"full_attention"}

    @property
    def number_of_conv_states(self) -> int:
        """Convolution states each state-keeping cache layer holds (transformers' `DynamicCache` reads this): the
        mixer's own at index 0, then one per Canon point, at 1 + its index in "ABCD"."""
        return 1 + len(CANON_POINTS) if self.canon_set else 1

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "CogFMConfig":
        """Build the config of a named size (see `PRESETS`); keyword arguments override its fields."""
        if name not in PRESETS:
            raise ValueError(f"Unknown CogFM preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})


# `save_pretrained` then copies this file into the checkpoint and writes `auto_map["AutoConfig"]`,
# so the checkpoint loads with trust_remote_code=True where this package is not installed.
CogFMConfig.register_for_auto_class()

__all__ = ["CogFMConfig", "PRESETS", "SUPPORTED_LAYER_TYPES", "CANON_POINTS"]
