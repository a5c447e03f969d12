"""The lm-eval model our evaluations run (`AnswerLineHFLM`): lm-eval's `hf` model with the same scores, faster.

What it changes, each change exact (tests/test_evaluation.py holds the scores to the plain model's):
- Greedy generations decode in batches across tasks (lm-eval batches each task apart: an in-loop evaluation of
  20 items per task decoded batches of 20 rows), in a greedy loop of our own (`greedy_decode`) that drops each row
  from the batch as soon as it is finished, so a batch costs what its rows write, not its longest row times its
  size. Rows are sorted by context length as lm-eval sorts them, which keeps the prompts' left padding short.
- A row is finished at its first complete answer line ("Answer: ...\n"; no scorer reads further), at one of its
  task's `until` strings, at end of text, or at its own `max_gen_toks`, as the plain model would stop it.
- The KV cache grows by doubling a buffer instead of concatenating at every token (`growing_cache`).
Sampled generations, and requests whose context lm-eval would truncate, take lm-eval's own path.
"""

from __future__ import annotations

import functools
import sys

import torch
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm
from transformers import StoppingCriteria
from transformers.cache_utils import (
    DynamicCache,
    DynamicLayer,
    LinearAttentionAndFullAttentionLayer,
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
        buffers = self._buffers
        # Rebuilt from keys/values when full, and when something replaced them (crop, reset, batch_select_indices).
        if buffers is None or buffers[0].shape[-2] < new_length or self.keys.data_ptr() != buffers[0].data_ptr():
            capacity = max(64, 2 * new_length)
            buffers = tuple(
                torch.empty((*states.shape[:-2], capacity, states.shape[-1]), dtype=states.dtype, device=states.device)
                for states in (key_states, value_states)
            )
            if length:
                buffers[0][..., :length, :] = self.keys
                buffers[1][..., :length, :] = self.values
            self._buffers = buffers
        buffers[0][..., length:new_length, :] = key_states
        buffers[1][..., length:new_length, :] = value_states
        self.keys, self.values = buffers[0][..., :new_length, :], buffers[1][..., :new_length, :]
        return self.keys, self.values


class GrowingLayer(GrowingKeysValues, DynamicLayer):
    """A full-attention layer's cache: keys and values only."""


class GrowingStateLayer(GrowingKeysValues, LinearAttentionAndFullAttentionLayer):
    """An attention layer's cache that also keeps convolution state (Canon layers; a hybrid layer's SSM): the
    states are transformers' own, only the keys and values grow by doubling."""


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


@torch.no_grad()
def greedy_decode(model, context: torch.LongTensor, attention_mask: torch.LongTensor, rows: list[RowEnd]) -> None:
    """Greedy decoding of a left-padded batch, step for step what `model.generate(do_sample=False)` computes (the
    same inputs, position ids from the attention mask, logits of the last position), until each row's `RowEnd`
    says it is finished. A finished row leaves the batch, its cache rows too, so no later step computes it."""
    cache = growing_cache(model.config) or DynamicCache(config=model.config)
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    input_ids, new_length, active = context, None, list(range(len(rows)))
    while active:
        inputs = model.prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=new_length,  # None: the prompt, then the one new token
            past_key_values=cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        tokens = model(**inputs, return_dict=True).logits[:, -1].to(dtype=torch.float32).argmax(-1)
        input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=-1)
        position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], dim=-1)
        new_length = 1
        keep = [i for i, token in enumerate(tokens.tolist()) if not rows[active[i]].add(token)]
        if len(keep) < len(active) and keep:
            index = torch.tensor(keep, device=input_ids.device)
            input_ids, attention_mask, position_ids = input_ids[index], attention_mask[index], position_ids[index]
            cache.reorder_cache(index)
        active = [active[i] for i in keep]


class AnswerLineHFLM(HFLM):
    """lm-eval's HF model (what `lm_eval --model hf` runs) with the same scores, faster: see the module docstring.
    Greedy requests decode in batches across tasks (`greedy_decode`); sampled ones take lm-eval's path, each
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
        """HFLM.generate_until (lm-eval 0.4) with greedy requests of every task in shared batches: sorted by context
        length (longest first, as lm-eval sorts), then budget, `batch_size` rows each, every row with its
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
        progress = tqdm(total=len(greedy), disable=disable_tqdm or self.rank != 0, desc="greedy generate_until")
        for start in range(0, len(greedy), self.batch_size):
            batch = greedy[start : start + self.batch_size]
            context_ids, attention_mask = self.tok_batch_encode([row[2] for row in batch])
            rows = [RowEnd(self, until, budget) for budget, _, _, _, until in batch]
            precision = self.mixed_precision_dtype
            with torch.autocast(device_type=self.device.type, dtype=precision, enabled=precision is not None):
                greedy_decode(self.model, context_ids.to(self.device), attention_mask.to(self.device), rows)
            for (_, _, context, index, until), row in zip(batch, rows, strict=True):
                response = self.tok_decode(row.tokens)
                responses[index] = postprocess_generated_text(generation=response, stop=until, think_end_token=None)
                self.cache_hook.add_partial("generate_until", requests[index].args, responses[index])
            progress.update(len(batch))
        progress.close()
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
