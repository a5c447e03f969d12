"""CogFM: a pre-norm decoder-only transformer for reasoning-focused pretraining.

This file is copied into every checkpoint next to `configuration_cogfm.py`, so it imports only
torch, transformers and that sibling (relatively) — a checkpoint then loads with
`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` on a machine that never
installed cogfm_hf. Structure and conventions follow transformers' `modeling_llama.py`.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_recurrent_attention_mask
from transformers.modeling_layers import (
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_cogfm import SSM_LAYER_TYPES, CogFMConfig
from .coupling_cogfm import (
    CoupledPlaces,
    coupled_places,
    document_starts,
    random_per_document,
    stretched_positions,
)
from .mixers_cogfm import (
    CogFMCausalConv,
    CogFMMamba2,
    CogFMShortConv,
    SequenceContext,
    canon,
    prepare_cache_layers,
)


class CogFMRMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain, computed in float32 whatever the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # torch's fused rms_norm; float32 keeps the statistics exact under bf16 autocast.
        normed = F.rms_norm(hidden_states.float(), (hidden_states.shape[-1],), eps=self.variance_epsilon)
        return self.weight * normed.to(hidden_states.dtype)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class CogFMRotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021): cos/sin for the given positions. `config.rope_parameters`
    chooses plain RoPE ("default") or one of transformers' scaled variants (linear, dynamic, yarn, llama3,
    longrope...), computed by transformers' own rope utilities as in Llama."""

    def __init__(self, config: CogFMConfig):
        super().__init__()
        self.config = config
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings  # dynamic variants
        self.rope_type = config.rope_parameters["rope_type"]
        if self.rope_type == "default":
            rope_init_fn = self.compute_default_rope_parameters
        else:
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: CogFMConfig, device=None, **kwargs) -> tuple[torch.Tensor, float]:
        """Plain RoPE's inverse frequencies, and its attention scaling (1: none). With `partial_rotary_factor` f
        only the first f x head_dim channels of each head rotate, as in transformers' rope utilities."""
        dim = int(config.head_dim * config.rope_parameters.get("partial_rotary_factor", 1.0))
        base = config.rope_parameters["rope_theta"]
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim)), 1.0

    @torch.no_grad()
    @dynamic_rope_update  # recomputes inv_freq for the dynamic variants; a no-op for the others
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    """Rotate queries and keys ([batch, heads, seq, head_dim]) by their positions' angles. Under partial RoPE
    (`cos` narrower than a head) the first `cos.shape[-1]` channels rotate and the rest pass unchanged."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rotary_dim = cos.shape[-1]
    if rotary_dim == q.shape[-1]:
        return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_rot, k_rot = (q_rot * cos) + (rotate_half(q_rot) * sin), (k_rot * cos) + (rotate_half(k_rot) * sin)
    return torch.cat((q_rot, q_pass), dim=-1), torch.cat((k_rot, k_pass), dim=-1)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[batch, kv_heads, seq, dim] -> [batch, kv_heads * n_rep, seq, dim] for grouped-query attention."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Reference attention in plain matmuls; `attn_implementation="sdpa"` (the default) is the fast path."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.transpose(1, 2).contiguous(), attn_weights


class CogFMAttention(nn.Module):
    """Grouped-query self-attention with RoPE and optional QK-norm, dispatched through transformers'
    attention interface (SDPA, eager, flash-attention, flex...)."""

    def __init__(self, config: CogFMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)
        self.o_proj.is_residual_projection = True  # depth-scaled init, see CogFMPreTrainedModel._init_weights
        # QK-norm (OLMo 2, Qwen 3): bounds attention logits, which keeps large models from diverging.
        self.q_norm = CogFMRMSNorm(self.head_dim, eps=config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = CogFMRMSNorm(self.head_dim, eps=config.rms_norm_eps) if config.qk_norm else None
        self.qkv_sizes = [self.q_proj.out_features, self.k_proj.out_features, self.v_proj.out_features]
        self.canon_b = canon(config, "B", sum(self.qkv_sizes), layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        sequence_context: SequenceContext | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape)
        key_states = self.k_proj(hidden_states).view(hidden_shape)
        value_states = self.v_proj(hidden_states)
        if self.q_norm is not None:
            query_states, key_states = self.q_norm(query_states), self.k_norm(key_states)
        if self.canon_b is not None:  # Canon B mixes each query, key and value with its predecessors' (before RoPE)
            qkv = torch.cat([query_states.flatten(-2), key_states.flatten(-2), value_states], dim=-1)
            qkv = self.canon_b(qkv, sequence_context, past_key_values)
            query_states, key_states, value_states = qkv.split(self.qkv_sizes, dim=-1)
            query_states, key_states = query_states.view(hidden_shape), key_states.view(hidden_shape)
        query_states = query_states.transpose(1, 2)
        key_states = key_states.transpose(1, 2)
        value_states = value_states.view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class CogFMMLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: CogFMConfig, layer_idx: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.down_proj.is_residual_projection = True  # depth-scaled init, see CogFMPreTrainedModel._init_weights
        self.canon_d = canon(config, "D", 2 * config.intermediate_size, layer_idx)

    def forward(
        self, x: torch.Tensor, sequence_context: SequenceContext, past_key_values: Cache | None
    ) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        if self.canon_d is not None:
            gate, up = self.canon_d(torch.cat([gate, up], dim=-1), sequence_context, past_key_values).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class CogFMDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + mixer(norm(x)), then x + mlp(norm(x)). The mixer is `config.layer_types[layer_idx]`:
    attention, a gated short convolution, Mamba-2, or attention and Mamba-2 side by side (outputs summed), with
    Canon layers where `config.canon_set` puts them."""

    def __init__(self, config: CogFMConfig, layer_idx: int):
        super().__init__()
        layer_type = config.layer_types[layer_idx]
        self.self_attn = CogFMAttention(config, layer_idx) if layer_type in ("full_attention", "hybrid") else None
        self.conv = CogFMShortConv(config, layer_idx) if layer_type == "conv" else None
        self.mamba = CogFMMamba2(config, layer_idx) if layer_type in SSM_LAYER_TYPES else None
        self.mlp = CogFMMLP(config, layer_idx)
        self.input_layernorm = CogFMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = CogFMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.canon_a = canon(config, "A", config.hidden_size, layer_idx)
        self.canon_c = canon(config, "C", config.hidden_size, layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        sequence_context: SequenceContext | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        context = sequence_context if sequence_context is not None else SequenceContext()
        mixer_input = self.input_layernorm(hidden_states)
        if self.canon_a is not None:
            mixer_input = self.canon_a(mixer_input, context, past_key_values)
        if self.self_attn is not None:
            attn_output, _ = self.self_attn(
                mixer_input,
                position_embeddings=position_embeddings,
                attention_mask=attention_mask,
                past_key_values=past_key_values,
                sequence_context=context,
                **kwargs,
            )
            hidden_states = hidden_states + attn_output
        if self.conv is not None:
            hidden_states = hidden_states + self.conv(mixer_input, context, past_key_values)
        if self.mamba is not None:
            hidden_states = hidden_states + self.mamba(mixer_input, context, past_key_values)
        mlp_input = self.post_attention_layernorm(hidden_states)
        if self.canon_c is not None:
            mlp_input = self.canon_c(mlp_input, context, past_key_values)
        return hidden_states + self.mlp(mlp_input, context, past_key_values)


class CogFMPreTrainedModel(PreTrainedModel):
    config: CogFMConfig
    config_class = CogFMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CogFMDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": CogFMDecoderLayer, "attentions": CogFMAttention}

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)  # normal(0, initializer_range) for Linear/Embedding, ones for norms
        if isinstance(module, nn.Linear) and getattr(module, "is_residual_projection", False):
            # Projections writing into the residual stream: divide std by sqrt(2 * layers) so the stream's
            # variance stays flat with depth (GPT-2 / OLMo). Tagged on the Linear itself because
            # transformers skips parameter-less container modules when initialising remote-code models.
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, CogFMCausalConv):
            # nn.Conv1d's own init, uniform(+-1/sqrt(kernel)) for a depthwise kernel: Part 4.1 finds Canon layers need
            # it (weights of std ~0.29 at kernel 4); transformers' default would shrink them to initializer_range.
            bound = 1 / math.sqrt(module.kernel_size)
            init.uniform_(module.weight, -bound, bound)
        if isinstance(module, CogFMMamba2):
            # Mamba-2's init: decay rates A = 1..heads, D = 1, and dt = softplus(dt_bias) log-uniform in [1e-3, 1e-1].
            init.copy_(module.A_log, torch.log(torch.arange(1, module.num_heads + 1, dtype=torch.float32)))
            init.ones_(module.D)
            dt = torch.exp(torch.rand(module.num_heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
            init.copy_(module.dt_bias, dt + torch.log(-torch.expm1(-dt)))  # the inverse of softplus

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` (bottom of this file) writes auto_map only for the saved class; a checkpoint
        # of any class should answer every Auto class, e.g. a pretrained LM loaded as a sequence classifier.
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.update({auto: f"modeling_cogfm.{model_class.__name__}" for auto, model_class in AUTO_CLASSES.items()})
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class CogFMModel(CogFMPreTrainedModel):
    """The decoder stack without the language-model head."""

    def __init__(self, config: CogFMConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([CogFMDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = CogFMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = CogFMRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        coupled_position_ids: torch.LongTensor | None = None,
        coupled_tokens: torch.BoolTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        r"""
        coupled_position_ids: with `config.position_coupling`, the RoPE positions of these tokens; computed here from
            `input_ids` when not given, which needs the whole sequence (generate() passes them while it decodes).
        coupled_tokens: with `position_coupling.canon` false, which of these tokens are coupled (given with
            `coupled_position_ids`).
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        # Only positions the caller gave can describe packed documents; the mask code reads them for that.
        given_position_ids = position_ids
        if position_ids is None:
            # Positions continue after whatever the cache already holds (no cache_position in v5).
            past_seen_tokens = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        # generate() may have built the masks already, one per layer type (static cache, compiled decoding).
        padding_mask = (
            attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2 else None
        )
        if not isinstance(mask_by_layer_type := attention_mask, dict):
            mask_by_layer_type = {
                "full_attention": create_causal_mask(
                    config=self.config,
                    inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask,
                    past_key_values=past_key_values,
                    position_ids=given_position_ids,
                )
            }
        else:  # the recurrent layers' 2D padding mask, under transformers' name for it
            padding_mask = mask_by_layer_type.get("linear_attention", mask_by_layer_type.get("conv"))
        if padding_mask is not None:
            padding_mask = create_recurrent_attention_mask(self.config, inputs_embeds, padding_mask)
        # The cache is created after the mask: transformers reads packed documents from restarting position_ids
        # only when there is no cache, and a cache made here holds no earlier tokens. So a packed row is masked
        # per document with use_cache on too (Llama creates the cache first, and lets such documents mix).
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if past_key_values is not None and (
            self.config.canon_set or set(self.config.layer_types) != {"full_attention"}
        ):
            prepare_cache_layers(past_key_values, self.config)
        # Convolutions and scans find document boundaries and padding here, once for every layer (attention-only
        # models skip it: their masks say all of that, and it would cost a host sync per forward pass).
        sequence_context = SequenceContext()
        if self.config.keeps_convolution_state:
            sequence_context = SequenceContext.build(given_position_ids, padding_mask, inputs_embeds.shape)
            if not self.training and not torch.compiler.is_compiling():
                sequence_context.ask_if_packed()

        hidden_states = inputs_embeds
        rope_position_ids = position_ids
        if self.config.position_coupling is not None:
            rope_position_ids = coupled_position_ids
            if rope_position_ids is None:
                places = self.coupled_positions(input_ids, given_position_ids, padding_mask, past_key_values)
                rope_position_ids, coupled_tokens = places.ids, places.coupled
            if not self.config.position_coupling.get("canon", True):
                if coupled_tokens is None:
                    raise ValueError("coupled_position_ids were given without coupled_tokens, which Canon needs here.")
                sequence_context.canon_mask = (~coupled_tokens)[..., None]
        elif self.training and self.config.train_position_stretch > 1:
            starts = document_starts(inputs_embeds.shape[:2], inputs_embeds.device, given_position_ids, padding_mask)
            rope_position_ids = stretched_positions(starts, self.config.train_position_stretch)
        position_embeddings = self.rotary_emb(hidden_states, position_ids=rope_position_ids)
        for decoder_layer in self.layers:
            # position_ids travel to the attention function: varlen kernels (flash-attention) find the document
            # boundaries of packed rows, which carry no attention mask, in them.
            hidden_states = decoder_layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=mask_by_layer_type["full_attention"],
                position_ids=position_ids,
                past_key_values=past_key_values,
                sequence_context=sequence_context,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, past_key_values=past_key_values)

    def coupled_positions(self, input_ids, given_position_ids, padding_mask, past_key_values) -> CoupledPlaces:
        if input_ids is None:
            raise ValueError("position_coupling reads the tokens: pass input_ids, not inputs_embeds.")
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            raise ValueError(
                "position_coupling needs the whole sequence to place these tokens: decode with generate(), or pass "
                "coupled_position_ids computed over the full sequence (coupling_cogfm.coupled_places)."
            )
        starts = document_starts(input_ids.shape, input_ids.device, given_position_ids, padding_mask)
        largest_gap = self.config.position_coupling.get("train_column_gap", 1)
        largest_offset = self.config.position_coupling.get("train_column_offset", 0)
        gaps = random_per_document(starts, 1, largest_gap) if self.training and largest_gap > 1 else None
        offsets = random_per_document(starts, 0, largest_offset) if self.training and largest_offset > 0 else None
        return coupled_places(input_ids, self.config.position_coupling, starts, gaps, offsets)


class CogFMForCausalLM(CogFMPreTrainedModel, GenerationMixin):
    """CogFM with a language-model head; the loss is shifted next-token cross-entropy."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: CogFMConfig):
        super().__init__(config)
        self.model = CogFMModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""
        labels: token ids to predict, unshifted (the loss shifts them); -100 is ignored. Pass
            `num_items_in_batch` (as transformers' Trainer does) to normalise the summed loss over all
            gradient-accumulation micro-batches instead of per micro-batch.
        logits_to_keep: compute logits only for the last N positions (0 = all); generation uses 1.
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, input_ids, *args, attention_mask=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, *args, attention_mask=attention_mask, **kwargs)
        new_tokens = model_inputs.get("input_ids")
        if self.config.position_coupling is not None and new_tokens is not None:
            # The new tokens' places depend on everything before them, which only generate() still holds.
            padding_mask = (
                attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2 else None
            )
            starts = document_starts(input_ids.shape, input_ids.device, padding_mask=padding_mask)
            places = coupled_places(input_ids, self.config.position_coupling, starts)
            model_inputs["coupled_position_ids"] = places.ids[:, -new_tokens.shape[1] :]
            model_inputs["coupled_tokens"] = places.coupled[:, -new_tokens.shape[1] :]
        return model_inputs


class CogFMForSequenceClassification(GenericForSequenceClassification, CogFMPreTrainedModel):
    """CogFM with a linear score head read at each row's last non-padding token (as Llama's): the base of
    verifiers and outcome reward models. Loads from a pretrained CogFM checkpoint; `score` starts untrained."""

    def __init__(self, config: CogFMConfig):
        # transformers' generic head builds its base with AutoModel.from_config, which a checkpoint loaded
        # without this package (trust_remote_code) cannot resolve: build CogFMModel directly.
        CogFMPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = CogFMModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()


class CogFMForTokenClassification(GenericForTokenClassification, CogFMPreTrainedModel):
    """CogFM with a linear score per token (as Llama's): the base of process reward models that label each
    reasoning step. As in transformers' generic head, the optional config fields `classifier_dropout` (default
    0.1) and `token_classification_bias` (default true) shape the head."""

    def __init__(self, config: CogFMConfig):
        CogFMPreTrainedModel.__init__(self, config)  # CogFMModel directly, as in CogFMForSequenceClassification
        self.num_labels = config.num_labels
        self.model = CogFMModel(config)
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(0.1 if dropout is None else dropout)
        bias = getattr(config, "token_classification_bias", True)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=bias)
        self.post_init()


# Saving copies this file (and its relative imports) into the checkpoint and writes these auto_map entries.
AUTO_CLASSES = {
    "AutoModel": CogFMModel,
    "AutoModelForCausalLM": CogFMForCausalLM,
    "AutoModelForSequenceClassification": CogFMForSequenceClassification,
    "AutoModelForTokenClassification": CogFMForTokenClassification,
}
for _auto_class, _model_class in AUTO_CLASSES.items():
    _model_class.register_for_auto_class(_auto_class)

__all__ = [
    "CogFMPreTrainedModel",
    "CogFMModel",
    "CogFMForCausalLM",
    "CogFMForSequenceClassification",
    "CogFMForTokenClassification",
]
