"""The lm-eval model our evaluations run (`AnswerLineHFLM`): lm-eval's `hf` model with the same scores, faster.

What it changes, each change exact (tests/test_evaluation.py holds the scores to the plain model's):
- Greedy generations decode together across tasks (lm-eval batches each task apart: an in-loop evaluation of
  20 items per task decoded batches of 20 rows), in a greedy loop of our own (`greedy_decode`) that drops each row
  from the batch as soon as it is finished and lets waiting rows join the running batch in its place, so the batch
  stays full and the decoding steps are about the tokens written over the batch size, not each batch's longest
  row. Rows are taken in lm-eval's order (longest context first).
- A row is finished at its first complete answer line ("Answer: ...\n"; no scorer reads further), at one of its
  task's `until` strings, at end of text, or at its own `max_gen_toks`, as the plain model would stop it.
- The KV cache grows by doubling a buffer instead of concatenating at every token (`growing_cache`).
Sampled generations, and requests whose context lm-eval would truncate, take lm-eval's own path.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm
from transformers import StoppingCriteria
from transformers.cache_utils import (
    CacheLayerMixin,
    DynamicCache,
    DynamicLayer,
    LinearAttentionAndFullAttentionLayer,
    LinearAttentionCacheLayerMixin,
    LinearAttentionLayer,
)

from ..tasks.answers import ANSWER_PREFIX


def answer_line_complete(text: str) -> bool:
    """Whether `text` holds a whole first answer line ("Answer: ...\n"): every cogfm scorer reads a response up to
    there and no further (answers.first_answer), so what a model writes after it cannot change a score."""
    start = text.find(ANSWER_PREFIX)
    return start >= 0 and "\n" in text[start + len(ANSWER_PREFIX) :]


class GrowingKeysValues:
    """Keys and values in a buffer that doubles when full, for a cache layer that would concatenate the whole cache
    with each new token (DynamicLayer: O(length) per token; at evaluation lengths, prompts of ~150 tokens and ~250
    generated, that copying was ~60% of decoding time on a CPU). The attention reads the same values through a
    view, so the outputs are those of the layer it is mixed into (tests/test_evaluation.py compares the tokens)."""

    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        new_length = length + key_states.shape[-2]
        buffers, rows = self._buffers, key_states.shape[0]
        # Rebuilt from keys/values when full, and when something replaced them (crop, reset, batch_select_indices).
        if (
            buffers is None
            or buffers[0].shape[-2] < new_length
            or buffers[0].shape[0] < rows
            or self.keys.data_ptr() != buffers[0].data_ptr()
        ):
            capacity = max(64, 2 * new_length)
            buffers = tuple(
                torch.empty((*states.shape[:-2], capacity, states.shape[-1]), dtype=states.dtype, device=states.device)
                for states in (key_states, value_states)
            )
            if length:
                buffers[0][..., :length, :] = self.keys
                buffers[1][..., :length, :] = self.values
            self._buffers = buffers
        buffers[0][:rows, ..., length:new_length, :] = key_states
        buffers[1][:rows, ..., length:new_length, :] = value_states
        self.keys, self.values = buffers[0][:rows, ..., :new_length, :], buffers[1][:rows, ..., :new_length, :]
        return self.keys, self.values

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Row i becomes row `beam_idx[i]`, inside the buffer (`move_rows`), so the next token is written after
        them without rebuilding the buffer."""
        if self._buffers is None or self.keys.data_ptr() != self._buffers[0].data_ptr():
            CacheLayerMixin.reorder_cache(self, beam_idx)
            return
        length = self.get_seq_length()
        for buffer in self._buffers:
            move_rows(buffer.narrow(-2, 0, length), beam_idx)
        self.keys, self.values = (buffer[: len(beam_idx), ..., :length, :] for buffer in self._buffers)


def move_rows(states: torch.Tensor, index: torch.LongTensor) -> torch.Tensor:
    """`states` with row i replaced by row `index[i]` in place, cut to `len(index)` rows (a view): only the rows
    that move are copied (a greedy batch moves its last rows into the places of finished ones), and the tensor keeps
    its memory layout."""
    index = index.to(states.device)
    if len(index) > states.shape[0]:
        return states.index_select(0, index)
    moved = (index != torch.arange(len(index), device=index.device)).nonzero().flatten()
    states.index_copy_(0, moved, states.index_select(0, index[moved]))
    return states[: len(index)]


class GrowingLayer(GrowingKeysValues, DynamicLayer):
    """A full-attention layer's cache: keys and values only."""


class GrowingStateLayer(GrowingKeysValues, LinearAttentionAndFullAttentionLayer):
    """An attention layer's cache that also keeps convolution state (Canon layers; a hybrid layer's SSM): the
    states are transformers' own, only the keys and values grow by doubling."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """As transformers' reorder, moving only the rows that move (`move_rows`): the convolution states keep
        the token-major layout Canon's cached steps leave them in."""
        for index in range(self.number_of_states):
            for states, initialized in (
                (self.conv_states, self.is_conv_states_initialized),
                (self.recurrent_states, self.is_recurrent_states_initialized),
            ):
                if initialized[index]:
                    states[index] = move_rows(states[index], beam_idx)
        GrowingKeysValues.reorder_cache(self, beam_idx)


def growing_cache(config) -> DynamicCache | None:
    """A DynamicCache whose attention layers grow by doubling (GrowingLayer, GrowingStateLayer): the layers
    transformers lays out from `config.layer_types`, with the convolution states each layer keeps (a Canon
    attention layer keeps `number_of_conv_states`); None for a config that does not say what its layers keep
    (generate() then makes its own cache)."""
    cache = DynamicCache(config=config)
    canon = bool(getattr(config, "canon_set", ""))
    if canon and getattr(config, "number_of_conv_states", None) is None:
        return None
    for index, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[index] = GrowingStateLayer(config.number_of_conv_states) if canon else GrowingLayer()
        elif type(layer) is LinearAttentionAndFullAttentionLayer:
            cache.layers[index] = GrowingStateLayer(layer.number_of_states)
        elif type(layer) is not LinearAttentionLayer:  # a kind this was not written for: leave it to generate()
            return None
    return cache


class RowEnd:
    """Whether one row of a greedy batch is finished, where the plain model would stop it: at end of text, at its
    token budget (`max_gen_toks`), at one of its task's `until` strings or at its complete answer line. Each new
    token's text is appended to the row's (cheap); a stop seen there is confirmed on the row's tokens decoded as
    lm-eval decodes the response, so a row never ends before its scored text is whole."""

    def __init__(self, lm: "AnswerLineHFLM", until: list[str], budget: int):
        self.lm, self.until, self.budget = lm, until, budget
        self.tokens: list[int] = []
        self.text = ""

    def add(self, token: int) -> bool:
        """Appends `token` to the row; whether the row is finished."""
        self.tokens.append(token)
        if token in self.lm.end_of_text_ids or len(self.tokens) >= self.budget:
            return True
        self.text += self.lm.token_texts[token]
        return self.stops(self.text) and self.stops(self.lm.tok_decode(self.tokens))

    def stops(self, text: str) -> bool:
        return answer_line_complete(text) or any(stop in text for stop in self.until)


class AnswerLineComplete(StoppingCriteria):
    """Marks a row of a batched generate() done once its answer line is complete (`RowEnd` with no other stop:
    generate() applies the task's `until` criteria, end of text and max_length itself)."""

    def __init__(self, lm: "AnswerLineHFLM", batch_size: int):
        self.rows = [RowEnd(lm, until=[], budget=sys.maxsize) for _ in range(batch_size)]
        self.done = [False] * batch_size

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        for index, token in enumerate(input_ids[:, -1].tolist()):
            self.done[index] = self.done[index] or self.rows[index].add(token)
        return torch.tensor(self.done, device=input_ids.device)


def join_caches(cache: DynamicCache, other: DynamicCache, pad: int, other_pad: int) -> None:
    """Appends `other`'s rows to `cache`'s, each side's keys and values first left-padded by its `pad` positions
    (the attention mask hides them); convolution and SSM states are per row and only stack."""
    for layer, joining in zip(cache.layers, other.layers, strict=True):
        if isinstance(layer, DynamicLayer) and layer.is_initialized:
            layer.keys, layer.values = (
                torch.cat([F.pad(mine, (0, 0, pad, 0)), F.pad(theirs, (0, 0, other_pad, 0))])
                for mine, theirs in ((layer.keys, joining.keys), (layer.values, joining.values))
            )
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            for index in range(layer.number_of_states):
                if layer.is_conv_states_initialized[index]:  # token-major, as Canon's cached steps keep them
                    layer.conv_states[index] = torch.cat(
                        [layer.conv_states[index].transpose(1, 2), joining.conv_states[index].transpose(1, 2)]
                    ).transpose(1, 2)
                if layer.is_recurrent_states_initialized[index]:
                    layer.recurrent_states[index] = torch.cat(
                        [layer.recurrent_states[index], joining.recurrent_states[index]]
                    )


class GreedyBatch:
    """Rows that decode together, as `generate(do_sample=False)` decodes a left-padded batch: their tokens so far,
    attention mask, position ids (from the mask, as generate() makes them) and the cache of all but the last token.
    A row leaves as soon as its `RowEnd` says it is finished; rows decoded apart can join (`join`)."""

    def __init__(self, model, input_ids: torch.LongTensor, attention_mask: torch.LongTensor, rows: list[RowEnd]):
        self.model, self.rows = model, rows
        self.input_ids, self.attention_mask = input_ids, attention_mask
        self.position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        self.cache = growing_cache(model.config) or DynamicCache(config=model.config)
        self.new_length = None  # the whole prompt first, then the one new token

    def step(self) -> None:
        """One greedy token for every row (the first step reads the prompts); finished rows leave."""
        inputs = self.model.prepare_inputs_for_generation(
            self.input_ids,
            next_sequence_length=self.new_length,
            past_key_values=self.cache,
            attention_mask=self.attention_mask,
            position_ids=self.position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        tokens = self.model(**inputs, return_dict=True).logits[:, -1].to(dtype=torch.float32).argmax(-1)
        self.input_ids = torch.cat([self.input_ids, tokens[:, None]], dim=-1)
        self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones((len(self.rows), 1))], -1)
        self.position_ids = torch.cat([self.position_ids, self.position_ids[:, -1:] + 1], dim=-1)
        self.new_length = 1
        finished = {index for index, token in enumerate(tokens.tolist()) if self.rows[index].add(token)}
        if not finished:
            return
        # The last rows still decoding take the places of finished ones, so a step moves no more rows in the cache
        # than it finished.
        remaining = len(self.rows) - len(finished)
        order = list(range(remaining))
        holes = sorted(index for index in finished if index < remaining)
        movers = [index for index in range(remaining, len(self.rows)) if index not in finished]
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        if order:
            index = torch.tensor(order, device=self.input_ids.device)
            self.input_ids, self.attention_mask = self.input_ids[index], self.attention_mask[index]
            self.position_ids = self.position_ids[index]
            self.cache.reorder_cache(index)
            self.drop_padding_columns()
        self.rows = [self.rows[index] for index in order]

    def drop_padding_columns(self) -> None:
        """Drops the leading positions that are padding in every row (left by rows that left): attention over them
        is work that changes nothing."""
        unused = int(self.attention_mask.any(0).long().argmax())
        if unused < MIN_PADDING_TO_DROP:
            return
        self.input_ids, self.attention_mask = self.input_ids[:, unused:], self.attention_mask[:, unused:]
        self.position_ids = self.position_ids[:, unused:]
        for layer in self.cache.layers:
            if isinstance(layer, DynamicLayer) and layer.is_initialized:
                layer.keys, layer.values = layer.keys[..., unused:, :], layer.values[..., unused:, :]

    def join(self, other: "GreedyBatch", pad_token_id: int) -> None:
        """Takes in `other`'s rows, which have read their prompts: both sides are left-padded to the longer, with
        `pad_token_id` (the tokenizer's, as its batches are padded)."""
        length = max(self.input_ids.shape[1], other.input_ids.shape[1])
        pad, other_pad = length - self.input_ids.shape[1], length - other.input_ids.shape[1]
        for name, value in (("input_ids", pad_token_id), ("attention_mask", 0), ("position_ids", 0)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(
                self, name, torch.cat([F.pad(mine, (pad, 0), value=value), F.pad(theirs, (other_pad, 0), value=value)])
            )
        join_caches(self.cache, other.cache, pad, other_pad)
        self.rows = self.rows + other.rows


# A batch takes in waiting rows once this share of its places is free: each intake is a prompt pass of its own, and
# a batch kept full takes fewer decoding steps for the same tokens (at cogfm-tiny's size a step cost ~8 ms whatever
# its rows plus ~0.18 ms a row; 1/8 decoded faster than 1/20, 1/4 or 1/2, docs/benchmarks.md).
REFILL_SHARE = 1 / 8
MIN_PADDING_TO_DROP = 16  # dropping a few columns would cost a copy of the cache for little attention saved


@torch.no_grad()
def greedy_decode(
    model,
    rows: list[RowEnd],
    encode: Callable[[list[int]], tuple[torch.LongTensor, torch.LongTensor]],
    batch_size: int,
    pad_token_id: int,
) -> None:
    """Greedy decoding of `rows`, at most `batch_size` at a time, each row step for step what
    `model.generate(do_sample=False)` computes for it (`GreedyBatch`), until its `RowEnd` says it is finished.
    Finished rows leave the batch at once, and waiting rows take their places (`encode` gives the left-padded
    prompts of the rows of the given indices): the batch stays full, so the decoding steps are about the tokens
    written over the batch size rather than the longest row of each batch. Models whose cache `growing_cache`
    does not lay out decode one batch at a time."""
    joinable = growing_cache(model.config) is not None
    waiting, batch = list(range(len(rows))), None
    while waiting or (batch is not None and batch.rows):
        free = batch_size - (len(batch.rows) if batch is not None else 0)
        empty = batch is None or not batch.rows
        if waiting and (empty or (joinable and free >= max(1, round(batch_size * REFILL_SHARE)))):
            taken, waiting = waiting[:free], waiting[free:]
            arriving = GreedyBatch(model, *encode(taken), [rows[index] for index in taken])
            arriving.step()
            if empty:
                batch = arriving
            elif arriving.rows:
                batch.join(arriving, pad_token_id)
            continue
        batch.step()


class AnswerLineHFLM(HFLM):
    """lm-eval's HF model (what `lm_eval --model hf` runs) with the same scores, faster: see the module docstring.
    Greedy requests of every task decode together (`greedy_decode`); sampled ones take lm-eval's path, each
    generation stopping at its answer line there too (`AnswerLineComplete`)."""

    @functools.cached_property
    def token_texts(self) -> list[str]:
        return [self.tok_decode([token]) for token in range(len(self.tokenizer))]

    @functools.cached_property
    def end_of_text_ids(self) -> set[int]:
        """The tokens at which generate() ends a row (the generation config's eos_token_id)."""
        ids = self.model.generation_config.eos_token_id
        return set() if ids is None else {ids} if isinstance(ids, int) else set(ids)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """HFLM.generate_until (lm-eval 0.4) with greedy requests of every task decoded together: sorted by context
        length (longest first, as lm-eval sorts), then budget, at most `batch_size` rows at a time, a waiting row
        taking a finished one's place (`greedy_decode`), every row with its
        own `until`, budget and left truncation (lm-eval's: none unless its context exceeds max_length minus its
        budget; such requests, and sampled ones, take lm-eval's path)."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        if self.batch_size == "auto" or self.think_end_token is not None or self.backend != "causal":
            return super().generate_until(requests, disable_tqdm)  # not what our evaluations use
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        greedy, other = [], []
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            budget = kwargs.pop("max_gen_toks")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            length = len(self.tok_encode(context))
            do_sample, temperature = kwargs.pop("do_sample", False), kwargs.pop("temperature", 0.0)
            if do_sample or temperature or kwargs or length > self.max_length - budget:
                other.append(index)
            else:
                greedy.append((budget, length, context, index, until))
        responses: list[str | None] = [None] * len(requests)
        if other:
            for index, response in zip(other, super().generate_until([requests[i] for i in other], disable_tqdm)):
                responses[index] = response
        greedy.sort(key=lambda row: (-row[1], -row[0], row[2]))  # lm-eval's order, then the longest budget
        progress = tqdm(
            total=len(greedy), disable=disable_tqdm or self.rank != 0, desc="greedy generate_until (rows begun)"
        )
        rows = [RowEnd(self, until, budget) for budget, _, _, _, until in greedy]

        def encode(indices: list[int]) -> tuple[torch.LongTensor, torch.LongTensor]:
            context_ids, attention_mask = self.tok_batch_encode([greedy[index][2] for index in indices])
            progress.update(len(indices))
            return context_ids.to(self.device), attention_mask.to(self.device)

        precision = self.mixed_precision_dtype
        with torch.autocast(device_type=self.device.type, dtype=precision, enabled=precision is not None):
            greedy_decode(self.model, rows, encode, self.batch_size, self.tokenizer.pad_token_id)
        progress.close()
        for (_, _, _, index, until), row in zip(greedy, rows, strict=True):
            response = self.tok_decode(row.tokens)
            responses[index] = postprocess_generated_text(generation=response, stop=until, think_end_token=None)
            self.cache_hook.add_partial("generate_until", requests[index].args, responses[index])
        return responses

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        """HFLM._model_generate (lm-eval 0.4), for the requests lm-eval's path decodes, with the answer line among
        the stopping criteria: lm-eval's `until` criteria, autocast as configured, the growing KV cache."""
        from lm_eval.models.utils_hf import stop_sequences_criteria

        generation_kwargs.setdefault("temperature", 0.0)
        if generation_kwargs["temperature"] == 0.0 and not generation_kwargs.get("do_sample"):
            generation_kwargs["do_sample"] = False
            generation_kwargs.pop("temperature")
        stopping = stop_sequences_criteria(self.tokenizer, stop, context.shape[1], context.shape[0])
        stopping.append(AnswerLineComplete(self, context.shape[0]))
        if "past_key_values" not in generation_kwargs and (cache := growing_cache(self.model.config)) is not None:
            generation_kwargs["past_key_values"] = cache
        precision = self.mixed_precision_dtype
        with torch.autocast(device_type=self.device.type, dtype=precision, enabled=precision is not None):
            return self.model.generate(
                input_ids=context,
                max_length=max_length,
                stopping_criteria=stopping,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                **generation_kwargs,
            )
