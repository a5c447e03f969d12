"""CogFM's non-attention mixers: causal depthwise convolutions (Canon layers, the gated short convolution) and
Mamba-2, with what makes them exact on packed rows, under left padding and with a cache.

Copied into every checkpoint beside `modeling_cogfm.py`, so it imports only torch and transformers. The Mamba-2
scan is transformers' own (Falcon-H1's `mamba2_chunk_scan` and `mamba2_selective_state_update`: the `mamba-ssm`
kernels where installed, else the pure-torch chunked SSD scan and one-token recurrence), not a copy. Those torch
bodies keep no document boundaries (they refuse `seq_idx`), so packed rows are ours: the convolutions drop every
tap that would reach into an earlier document, and the scan runs on the documents unpacked into a batch of their
own (`PackedDocuments`), each from a zero state. A row of two documents then gives each exactly what it gets alone.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import (
    Cache,
    DynamicCache,
    DynamicLayer,
    LinearAttentionAndFullAttentionLayer,
    LinearAttentionAndStaticFullAttentionLayer,
    LinearAttentionCacheLayerMixin,
    StaticLayer,
)
from transformers.models.falcon_h1.modeling_falcon_h1 import mamba2_chunk_scan, mamba2_selective_state_update

from .configuration_cogfm import ATTENTION_LAYER_TYPES, CANON_POINTS, CogFMConfig


@dataclass
class SequenceContext:
    """What every convolution and scan of one forward pass needs to know about its rows, worked out once.

    padding_mask: [batch, seq] 1 for tokens, 0 for padding (left padding in generation), or None when there is
        none. Padding enters no state: its inputs are zeroed.
    segment_ids: [batch, seq] index of each token's document within its row, counted from 0, or None without
        `position_ids`. A document starts where `position_ids` restart (a position that does not follow its
        neighbour's by 1), as in transformers' packed-sequence detection. Worked out without asking whether any row
        is packed: that question is a host sync, and under `torch.compile` a graph break that split the training
        step in two (and, at the break, inductor 2.13 generated an fp32 loss backward that wrote past its buffer).
    canon_mask: [batch, seq, 1] 1 where Canon layers act, 0 where they pass the token through (coupled tokens,
        with `position_coupling.canon` false), or None: they act everywhere.
    At inference (`ask_if_packed`), whether any row is packed is asked once (a host sync, cheap outside a
    compiled graph), and rows of one document each skip the tap masks, which would multiply by ones.
    """

    padding_mask: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None
    canon_mask: torch.Tensor | None = None
    _tap_masks: dict = field(default_factory=dict)
    _documents: "PackedDocuments | None" = None
    _packed: bool | None = None  # whether any row holds more than one document; asked once, by documents()

    @classmethod
    def build(
        cls, position_ids: torch.Tensor | None, padding_mask: torch.Tensor | None, shape: torch.Size
    ) -> "SequenceContext":
        """For inputs of `shape` ([batch, seq, ...]); `position_ids` may have one row for the whole batch."""
        segment_ids = None
        batch, seq_len = shape[:2]
        if position_ids is not None and seq_len > 1:
            position_ids = position_ids[:, -seq_len:].expand(batch, -1)
            starts = position_ids[:, 1:] != position_ids[:, :-1] + 1
            if padding_mask is not None:  # the first token after left padding continues nothing
                starts &= padding_mask[:, 1:].bool() & padding_mask[:, :-1].bool()
            segment_ids = F.pad(starts.long().cumsum(-1), (1, 0))
        return cls(padding_mask=padding_mask, segment_ids=segment_ids)

    def ask_if_packed(self) -> None:
        """Finds out now whether any row holds more than one document (one host sync); without it the question
        waits for a scan to ask it (`documents`), and the convolutions mask every tap."""
        if self._packed is None:
            self._packed = self.segment_ids is not None and bool(self.segment_ids[:, -1].any())

    def tap_mask(self, offset: int) -> torch.Tensor | None:
        """[batch, seq, 1]: whether the token `offset` places back belongs to the same document (taps before the
        row's start read the cached state or zeros, which belong to the row's first document); None where every
        tap does."""
        if self.segment_ids is None or self._packed is False:
            return None
        if offset not in self._tap_masks:
            segments = self.segment_ids
            earlier = F.pad(segments, (offset, 0))[:, : segments.shape[1]]
            self._tap_masks[offset] = (earlier == segments)[..., None]
        return self._tap_masks[offset]

    def documents(self) -> "PackedDocuments | None":
        """The packed rows' documents as batches of their own, or None where no row holds more than one (one host
        sync, paid by the scans alone: they unpack, the convolutions only mask)."""
        if self._documents is None:
            self.ask_if_packed()
            if self._packed:
                self._documents = PackedDocuments(self.segment_ids)
        return self._documents

    def zero_padding(self, states: torch.Tensor) -> torch.Tensor:
        """`states` ([batch, seq, ...]) with padding positions zeroed."""
        if self.padding_mask is None:
            return states
        mask = self.padding_mask[:, -states.shape[1] :].to(states.dtype)
        return states * mask.view(*mask.shape, *([1] * (states.ndim - 2)))


class PackedDocuments:
    """The documents of packed rows as batches of their own, and back. Documents are bucketed by length (up to the
    next power of two, at least 8), each bucket a right-padded batch [documents, bucket length, ...]: a row packs
    documents of very different lengths (25 chains problems of ~10 tokens beside one of 141), and one batch padded
    to the longest would scan ~19x the tokens. Right padding is harmless to a causal scan: no document's tokens see
    what follows them."""

    def __init__(self, segment_ids: torch.Tensor):
        batch, seq_len = segment_ids.shape
        device = segment_ids.device
        starts = F.pad(segment_ids[:, 1:] != segment_ids[:, :-1], (1, 0), value=True).flatten()
        start_index = starts.nonzero().squeeze(-1)
        lengths = torch.diff(start_index, append=start_index.new_tensor([batch * seq_len]))
        # The row each document came from, and whether it is the row's first (it continues a cached state) or last
        # (its final state is the row's).
        self.row = start_index // seq_len
        self.first_of_row = start_index % seq_len == 0
        self.last_of_row = torch.cat([self.row[1:] != self.row[:-1], self.row.new_ones(1, dtype=torch.bool)])
        self.shape, self.documents = (batch, seq_len), len(start_index)
        bucket_of_document = torch.clamp(torch.ceil(torch.log2(lengths.float())), min=3).long()
        self.buckets = []  # (document indices, gather index [n, length], valid [n, length]) per bucket
        for exponent in torch.unique(bucket_of_document).tolist():  # one host sync per forward pass
            members = (bucket_of_document == exponent).nonzero().squeeze(-1)
            steps = torch.arange(2**exponent, device=device)
            valid = steps < lengths[members, None]
            gather = (start_index[members, None] + steps).clamp(max=batch * seq_len - 1)
            self.buckets.append((members, gather, valid))

    def unpack(self, states: torch.Tensor) -> list[torch.Tensor]:
        """[batch, seq, ...] -> per bucket [documents, bucket length, ...], zeros after each document's end."""
        flat = states.flatten(0, 1)
        return [
            flat[gather] * valid.view(*valid.shape, *([1] * (flat.ndim - 1))).to(flat.dtype)
            for _, gather, valid in self.buckets
        ]

    def pack(self, per_bucket: list[torch.Tensor]) -> torch.Tensor:
        """Per bucket [documents, bucket length, ...] -> [batch, seq, ...]."""
        first = per_bucket[0]
        out = first.new_zeros((self.shape[0] * self.shape[1], *first.shape[2:]))
        for (_, gather, valid), states in zip(self.buckets, per_bucket):
            out = out.index_put((gather[valid],), states[valid])
        return out.unflatten(0, self.shape)

    def per_document(self, per_bucket: list[torch.Tensor]) -> torch.Tensor:
        """Per bucket [documents, ...] -> [all documents, ...], in document order."""
        out = per_bucket[0].new_zeros((self.documents, *per_bucket[0].shape[1:]))
        for (members, _, _), states in zip(self.buckets, per_bucket):
            out = out.index_put((members,), states)
        return out


class CogFMCausalConv(nn.Module):
    """Depthwise causal convolution over the sequence, channels last: out[t] = sum_j weight[:, j] * x[t - (K-1) + j],
    as a depthwise `nn.Conv1d` with left padding. Taps that would reach into an earlier document of a packed row
    are dropped, padding is zeroed before it enters, and with a cache the last inputs live in the layer's
    convolution state `state_idx`, so a cached step sees what the uncached pass sees."""

    def __init__(self, channels: int, kernel_size: int, layer_idx: int, state_idx: int, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.kernel_size, self.layer_idx, self.state_idx, self.activation = (
            kernel_size,
            layer_idx,
            state_idx,
            activation,
        )

    def forward(self, states: torch.Tensor, context: SequenceContext, past_key_values: Cache | None) -> torch.Tensor:
        seq_len, kernel = states.shape[1], self.kernel_size
        states = context.zero_padding(states)
        width = seq_len + kernel - 1
        layer = past_key_values.layers[self.layer_idx] if past_key_values is not None else None
        if (
            seq_len == 1
            and getattr(layer, "has_previous_state", {}).get(self.state_idx)
            and not layer.record_past
            and not torch.compiler.is_compiling()  # a compiled step keeps the state's address: transformers' update
        ):
            window = self.shift_state(layer, states)
        elif past_key_values is not None:
            # transformers' convolution state ([batch, channels, kernel]: the last inputs); it returns them followed
            # by the new ones, or the new ones alone (zero-padded to the kernel) on the first call
            window = past_key_values.update_conv_state(
                states.transpose(1, 2), self.layer_idx, state_idx=self.state_idx, conv_kernel_size=kernel
            ).transpose(1, 2)
            if window.shape[1] < width:
                window = F.pad(window, (0, 0, width - window.shape[1], 0))
            window = window[:, -width:]
        else:
            window = F.pad(states, (0, 0, kernel - 1, 0))  # [batch, seq + kernel - 1, channels]
        # One contiguous row of weights per tap: a product with a column of `weight` (strided) ran 3-4x slower on a
        # CPU, for the same values.
        taps = self.weight.t().to(window.dtype).contiguous()
        out = None
        for tap in range(kernel):
            term = window[:, tap : tap + seq_len] * taps[tap]
            offset = kernel - 1 - tap
            if offset and (mask := context.tap_mask(offset)) is not None:
                term = term * mask
            out = term if out is None else out + term
        return F.silu(out) if self.activation else out

    def shift_state(self, layer, new_input: torch.Tensor) -> torch.Tensor:
        """One decoding step's window ([batch, kernel, channels]: the last inputs, `new_input` last) and the state
        it leaves, as transformers' `update_conv_state` leaves it, but kept token-major in memory: the state is seen
        as transformers' [batch, channels, kernel] and stored as [batch, kernel, channels]. Its own update
        concatenates along the kernel axis, the innermost (a strided copy that took ~90% of a cached Canon step on a
        CPU); token-major, the shift and every tap read contiguous rows. A state in transformers' layout (after a
        prompt pass) is read as it is and comes out token-major."""
        state = layer.conv_states[self.state_idx]
        window = torch.cat([state.transpose(1, 2)[:, 1:], new_input], dim=1)
        layer.conv_states[self.state_idx] = window.to(state.dtype).transpose(1, 2)
        return window

    def extra_repr(self) -> str:
        return f"channels={self.weight.shape[0]}, kernel_size={self.kernel_size}, state_idx={self.state_idx}"


class CogFMCanon(CogFMCausalConv):
    """A Canon layer: x + conv(x), a residual causal depthwise convolution (no bias, no activation), mixing each
    token with its few predecessors at one point of the block (Physics of Language Models Part 4.1)."""

    def __init__(self, channels: int, config: CogFMConfig, layer_idx: int, point: str):
        super().__init__(channels, config.canon_kernel, layer_idx, state_idx=1 + CANON_POINTS.index(point))

    def forward(self, states: torch.Tensor, context: SequenceContext, past_key_values: Cache | None) -> torch.Tensor:
        mixed = super().forward(states, context, past_key_values)  # the state is updated for every token
        if context.canon_mask is not None:
            mixed = mixed * context.canon_mask.to(mixed.dtype)
        return states + mixed


def canon(config: CogFMConfig, point: str, channels: int, layer_idx: int) -> CogFMCanon | None:
    """The Canon layer at `point` of layer `layer_idx`, or None where `config.canon_set` has none."""
    return CogFMCanon(channels, config, layer_idx, point) if point in config.canon_set else None


class CogFMShortConv(nn.Module):
    """Gated short convolution, as LFM2's `Lfm2ShortConv`: B, C, x = in_proj(h); out_proj(C * conv(B * x))."""

    def __init__(self, config: CogFMConfig, layer_idx: int):
        super().__init__()
        self.in_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.conv = CogFMCausalConv(config.hidden_size, config.conv_kernel, layer_idx, state_idx=0)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.out_proj.is_residual_projection = True  # depth-scaled init, see CogFMPreTrainedModel._init_weights

    def forward(self, hidden_states, context: SequenceContext, past_key_values: Cache | None) -> torch.Tensor:
        gate_in, gate_out, values = self.in_proj(hidden_states).chunk(3, dim=-1)
        return self.out_proj(gate_out * self.conv(gate_in * values, context, past_key_values))


class CogFMGatedRMSNorm(nn.Module):
    """Mamba-2's output norm: RMSNorm(y * silu(z)) over each group of channels, in float32."""

    def __init__(self, hidden_size: int, groups: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.groups, self.variance_epsilon = groups, eps

    def forward(self, hidden_states: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        gated = (hidden_states.float() * F.silu(gate.float())).unflatten(-1, (self.groups, -1))
        normed = F.rms_norm(gated, (gated.shape[-1],), eps=self.variance_epsilon).flatten(-2)
        return (self.weight * normed).to(dtype)


class CogFMMamba2(nn.Module):
    """Mamba-2 (Dao & Gu 2024) in Falcon-H1's form: in_proj -> (z, x|B|C, dt); a SiLU causal convolution over
    x|B|C; the selective scan h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t; a gated RMSNorm with z;
    out_proj. The scan is transformers' (see the module docstring)."""

    def __init__(self, config: CogFMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.inner_size, self.head_dim = config.mamba_d_ssm, config.mamba_d_head
        self.num_heads = config.mamba_d_ssm // config.mamba_d_head
        self.groups, self.state_size = config.mamba_n_groups, config.mamba_d_state
        self.chunk_size = config.mamba_chunk_size
        self.conv_size = self.inner_size + 2 * self.groups * self.state_size
        self.in_proj = nn.Linear(config.hidden_size, self.inner_size + self.conv_size + self.num_heads, bias=False)
        self.conv = CogFMCausalConv(self.conv_size, config.mamba_d_conv, layer_idx, state_idx=0, activation=True)
        self.A_log = nn.Parameter(torch.empty(self.num_heads))  # A = -exp(A_log): each head's decay rate
        self.D = nn.Parameter(torch.empty(self.num_heads))  # skip connection
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.norm = CogFMGatedRMSNorm(self.inner_size, self.groups, config.rms_norm_eps)
        self.out_proj = nn.Linear(self.inner_size, config.hidden_size, bias=False)
        self.out_proj.is_residual_projection = True  # depth-scaled init, see CogFMPreTrainedModel._init_weights

    def forward(self, hidden_states, context: SequenceContext, past_key_values: Cache | None) -> torch.Tensor:
        batch, seq_len, _ = hidden_states.shape
        gate, xbc, dt = self.in_proj(context.zero_padding(hidden_states)).split(
            [self.inner_size, self.conv_size, self.num_heads], dim=-1
        )
        xbc = context.zero_padding(self.conv(xbc, context, past_key_values))
        x, B, C = xbc.split([self.inner_size, self.groups * self.state_size, self.groups * self.state_size], dim=-1)
        A = -torch.exp(self.A_log.float())
        state = past_key_values.get_recurrent_state(self.layer_idx) if past_key_values is not None else None
        if state is not None and seq_len == 1:
            y = self._step(state, x, dt, A, B, C)
        else:
            y, final_state = self._scan(x, dt, A, B, C, context, state, want_state=past_key_values is not None)
            if past_key_values is not None:
                past_key_values.update_recurrent_state(final_state, self.layer_idx)
        return self.out_proj(self.norm(y.to(hidden_states.dtype), gate))

    def _scan(self, x, dt, A, B, C, context: SequenceContext, state, want_state: bool):
        """The chunked scan over whole sequences, or over the documents of packed rows, each from a zero state."""
        documents = context.documents()
        if documents is None:
            return self._chunk_scan(x, dt, A, B, C, state, want_state, self.chunk_size)
        outputs, final_states = [], []
        for (members, _, valid), bx, bdt, bB, bC in zip(
            documents.buckets, *(documents.unpack(t) for t in (x, dt, B, C))
        ):
            # After a document's end, softplus(-inf) = 0 makes dt 0: no input and no decay, so the scan's final state
            # is the state at the document's end.
            bdt = bdt.masked_fill(~valid[..., None], float("-inf"))
            initial = None
            if state is not None:  # only a row's first document continues the cached state
                first = documents.first_of_row[members].view(-1, 1, 1, 1).to(state.dtype)
                initial = state[documents.row[members]] * first
            chunk = min(self.chunk_size, bx.shape[1])
            y, final_state = self._chunk_scan(bx, bdt, A, bB, bC, initial, want_state, chunk)
            outputs.append(y)
            final_states.append(final_state)
        y = documents.pack(outputs)
        if want_state:  # a row's state is its last document's
            return y, documents.per_document(final_states)[documents.last_of_row]
        return y, None

    def _chunk_scan(self, x, dt, A, B, C, state, want_state: bool, chunk_size: int):
        batch, seq_len = x.shape[:2]
        result = mamba2_chunk_scan(
            x.reshape(batch, seq_len, self.num_heads, self.head_dim),
            dt,
            A,
            B.reshape(batch, seq_len, self.groups, self.state_size),
            C.reshape(batch, seq_len, self.groups, self.state_size),
            chunk_size=chunk_size,
            D=self.D,
            dt_bias=self.dt_bias,
            initial_states=state,
            dt_softplus=True,
            return_final_states=want_state,
        )
        y, final_state = result if want_state else (result, None)
        return y.reshape(batch, seq_len, self.inner_size), final_state

    def _step(self, state, x, dt, A, B, C):
        """One cached token: transformers' recurrent update, which also writes the new state into `state`."""
        batch = x.shape[0]
        y = mamba2_selective_state_update(
            state,
            x.view(batch, self.num_heads, self.head_dim),
            dt.view(batch, self.num_heads, 1).expand(-1, -1, self.head_dim),
            A[:, None, None].expand(-1, self.head_dim, self.state_size),
            B.view(batch, self.groups, self.state_size),
            C.view(batch, self.groups, self.state_size),
            self.D[:, None].expand(-1, self.head_dim),
            dt_bias=self.dt_bias[:, None].expand(-1, self.head_dim),
            dt_softplus=True,
        )
        return y.view(batch, 1, self.inner_size)


def prepare_cache_layers(past_key_values: Cache, config: CogFMConfig) -> None:
    """Makes every layer's cache able to hold what the layer keeps. transformers lays a cache out from `layer_types`
    alone: a `full_attention` layer with Canon layers gets a key/value layer without convolution state, and a cache
    made without a config (`DynamicCache()`) grows key/value layers only. Before its first update, such a layer is
    replaced by transformers' own layer of the kind it needs (dynamic or static)."""
    if not past_key_values.layers and past_key_values.layer_class_to_replicate is DynamicLayer:
        past_key_values.layers = DynamicCache(config=config).layers
        past_key_values.layer_class_to_replicate = None
    for layer_idx, layer_type in enumerate(config.layer_types):
        layer = past_key_values.layers[layer_idx]
        if layer_type == "full_attention" and not config.canon_set:
            continue  # keys and values only
        if (
            isinstance(layer, LinearAttentionCacheLayerMixin)
            and layer.number_of_states >= config.number_of_conv_states
        ):
            continue
        if isinstance(layer, LinearAttentionCacheLayerMixin) and not any(layer.has_previous_state.values()):
            past_key_values.layers[layer_idx] = type(layer)(number_of_states=config.number_of_conv_states)
        elif type(layer) is DynamicLayer and not layer.is_initialized and layer_type in ATTENTION_LAYER_TYPES:
            past_key_values.layers[layer_idx] = LinearAttentionAndFullAttentionLayer(config.number_of_conv_states)
        elif type(layer) is StaticLayer and layer.get_seq_length() == 0 and layer_type in ATTENTION_LAYER_TYPES:
            past_key_values.layers[layer_idx] = LinearAttentionAndStaticFullAttentionLayer(
                layer.max_cache_len, config.number_of_conv_states
            )
        else:
            raise ValueError(
                f"Layer {layer_idx} of this CogFM model ({layer_type!r}, canon_set={config.canon_set!r}) keeps "
                f"convolution state that its cache layer ({type(layer).__name__}) cannot hold; pass an empty "
                "DynamicCache or StaticCache, or none."
            )
