"""Position coupling (Cho et al. 2024, arXiv 2405.20671) for column-by-column arithmetic, computed from the tokens.

RoPE normally rotates each token by its index in the sequence, so a scratchpad step that must read "the i-th digit
of each operand" looks back a distance that grows with i: distances a model trained on short numbers never saw.
Coupled position ids give every token of one digit column the same place, whatever the number's length, so the
lookups a column needs sit at the same relative distance at 4 digits and at 16.

The ids are a pure, causal function of a document's tokens (written for the `order: lsd` arithmetic format:
operands and answer least-significant digit first, one scratchpad line per column):

    743+985=?                    the first line, a *number line*
    7+9+0=16 write 6 carry 1.    a *step line*: a line that starts with a digit, one per column
    4+8+1=13 write 3 carry 1.
    3+5+1=9 write 9 carry 0.
    Answer: 639                  any other line is a number line

- a token of step line `c` (0-based, counted from the second line) gets `stride * c + slot`, `slot` being its
  index in the line, the newline that opens the line counting as 0 (the newline predicts the line's first token,
  so it sits in the column it opens), clamped to `stride - 1`. With `back_token_id`, the self-correction marker
  restarts the count as a newline does: a wrong start of a step, the marker and the step written again
  (`4+8+1=14<|back|>4+8+1=13 write 3 carry 1.`) put the mistake and the corrected step at a clean step's places;
- a digit of a number line gets `stride * k + r`: `k` its index within its number (its significance, the numbers
  being written least-significant digit first), `r` which number of the line it belongs to (0, 1, ...);
- any other token of a number line gets `stride - 1`.

So operand digit k, the step line of column k and answer digit k keep the same distances between them at any
length. Training and inference compute the same ids: `CogFMModel` from the `input_ids` of a full sequence (packed
rows split into documents where `position_ids` restart), and `generate()` from everything generated so far
(`CogFMForCausalLM.prepare_inputs_for_generation`), so lm-eval's `hf` model, which passes no position ids, gets
them too.

A random offset of a whole document (the paper's, for its absolute position embeddings) would change no attention
score under RoPE, which sees only differences. What RoPE does meet at test is *distances* a short training never
showed: a 16-digit problem puts tokens 16 columns apart, 4-digit training at most 5. With `train_column_gap` G > 1 each
training document spreads its columns by a random gap of 1..G (column c at `stride * c * gap`; within a column
nothing moves), so training shows distances up to G times longer, in the spirit of randomised positions (Ruoss et
al. 2023); evaluation and generation always use gap 1.

The tokens of a number line that are not digits (`+`, `=?`, `Answer: `) all sit at `stride - 1`, so the distance from
them to column c is `stride * c` plus a little: an absolute column index, which lets a model learn column-specific
habits, e.g. "the fifth column is a carry and writes 1", true of every 4-digit training sum and false at 5 digits.
With `train_column_offset` O > 0 each training document moves its digits and step lines by a random number of
columns 0..O (column c at `stride * (c * gap + offset)`; the other tokens stay), so that distance no longer tells
which column a token is in: the paper's random offset, applied where RoPE can see it. Evaluation uses offset 0.

Canon layers (short convolutions over the token order) can count tokens locally: an answer digit whose window
holds no `Answer: ` is the fourth or later, and in 4-digit training the fifth answer digit is always a carry's 1
(measured: a model with Canon layers copied the fifth answer digit wrong at 5 digits, one without did not). With
`"canon": False` the Canon layers pass coupled tokens through unchanged (their output is the input), so sums are
read by coupled positions alone while the other documents of a mixture keep their Canon layers.

With `operator_token_ids` (the tokens besides digits a sum's first line holds: `+`, `=?`) only *sums* are coupled,
so one model can learn arithmetic in this format beside prose, code and other tasks: a document keeps coupled ids
while its first line holds nothing but digits and those tokens, and after its first line only if that line held at
least one of them; from the first other token of its first line on (`Mod 10.`, `def f(n):`, `Facts: ...`) a
document takes ordinary positions, its tokens' indices from the document's start. The rule reads only tokens so far,
so it too is causal and the same in training and generation.

This file is copied into every checkpoint (modeling_cogfm.py imports it); it imports only torch and dataclasses.
"""

from dataclasses import dataclass

import torch


def document_starts(
    shape: tuple[int, int],
    device: torch.device,
    position_ids: torch.Tensor | None = None,
    padding_mask: torch.Tensor | None = None,
) -> torch.BoolTensor:
    """True at each document's first token: where the given `position_ids` restart (packed rows), else at the first
    token the 2D `padding_mask` keeps (left padding), else at index 0."""
    if position_ids is not None:
        return (position_ids == 0).expand(shape)
    starts = torch.zeros(shape, dtype=torch.bool, device=device)
    if padding_mask is not None:
        first_kept = padding_mask.to(torch.long).argmax(dim=-1)
        starts[torch.arange(shape[0], device=device), first_kept] = True
    else:
        starts[:, 0] = True
    return starts


def _last_position_where(flags: torch.BoolTensor) -> torch.LongTensor:
    """For each token, the index of the latest token at or before it where `flags` holds (0 where none has)."""
    index = torch.arange(flags.shape[-1], device=flags.device).expand(flags.shape)
    return torch.where(flags, index, 0).cummax(dim=-1).values


def random_per_document(starts: torch.BoolTensor, low: int, high: int) -> torch.LongTensor:
    """Per token, one integer drawn uniformly from `low`..`high` for its document (training only: column gaps,
    column offsets)."""
    document = starts.long().cumsum(-1)
    draws = torch.randint(low, high + 1, (starts.shape[0], starts.shape[-1] + 1), device=starts.device)
    return draws.gather(-1, document)


def stretched_positions(starts: torch.BoolTensor, stretch: int) -> torch.LongTensor:
    """Per token, its RoPE position when every token after its document's first advances by a random 1..`stretch`
    (training only: `train_position_stretch`). Each document starts at 0, as ordinary positions do."""
    steps = torch.randint(1, stretch + 1, starts.shape, device=starts.device).masked_fill(starts, 0)
    travelled = steps.cumsum(-1)
    return travelled - travelled.gather(-1, _last_position_where(starts))


@dataclass
class CoupledPlaces:
    ids: torch.LongTensor  # every token's RoPE position
    coupled: torch.BoolTensor  # whether the token is coupled (every token, or with `operator_token_ids` a sum's)


def coupled_places(
    input_ids: torch.LongTensor,
    coupling: dict,
    starts: torch.BoolTensor,
    column_gaps: torch.LongTensor | None = None,
    column_offsets: torch.LongTensor | None = None,
) -> CoupledPlaces:
    """The coupled position id of every token of `input_ids` (batch, length), and which tokens are coupled;
    `starts` marks document starts (`document_starts`). See the module docstring for the rule; `column_gaps` and
    `column_offsets` (per token, from `random_per_document`) move the columns: column c at
    `stride * (c * gap + offset)`."""
    stride = coupling["stride"]
    digits = torch.tensor(coupling["digit_token_ids"], device=input_ids.device)
    is_digit = torch.isin(input_ids, digits)
    line_start = starts | (input_ids == coupling["newline_token_id"])
    index = torch.arange(input_ids.shape[-1], device=input_ids.device).expand(input_ids.shape)

    line_start_at = _last_position_where(line_start)
    lines_so_far = line_start.long().cumsum(-1)
    line = lines_so_far - lines_so_far.gather(-1, _last_position_where(starts))  # 0: the document's first line
    line_slot = index - line_start_at
    opens_with_digit = is_digit.gather(-1, (line_start_at + 1).clamp(max=input_ids.shape[-1] - 1))
    step_line = (line > 0) & ((line_slot == 0) | opens_with_digit)  # a newline is in the column it opens
    slot = line_slot
    if "back_token_id" in coupling:  # a step written again after a mistake takes the places of a clean step
        slot = index - _last_position_where(line_start | (input_ids == coupling["back_token_id"]))
    column_stride = stride if column_gaps is None else stride * column_gaps
    first_column = 0 if column_offsets is None else stride * column_offsets
    step_ids = column_stride * (line - 1).clamp(min=0) + slot.clamp(max=stride - 1) + first_column

    previous_is_digit = torch.nn.functional.pad(is_digit[..., :-1], (1, 0), value=False)
    run_start = is_digit & ~(previous_is_digit & ~line_start)
    significance = index - _last_position_where(run_start)
    runs_so_far = run_start.long().cumsum(-1)
    runs_before_line = runs_so_far.gather(-1, line_start_at) - run_start.gather(-1, line_start_at).long()
    number = (runs_so_far - runs_before_line - 1).clamp(min=0, max=stride - 2)
    number_ids = torch.where(is_digit, column_stride * significance + number + first_column, stride - 1)
    coupled = torch.where(step_line, step_ids, number_ids)
    if "operator_token_ids" not in coupling:
        return CoupledPlaces(coupled, torch.ones_like(is_digit))
    # Only sums: count, per document, the first line's tokens that are neither digits nor operators, and its operators.
    document_start_at = _last_position_where(starts)
    operator = torch.isin(input_ids, torch.tensor(coupling["operator_token_ids"], device=input_ids.device))
    first_line = line == 0
    foreign_so_far = _count_in_document(first_line & ~is_digit & ~operator, document_start_at)
    operators_so_far = _count_in_document(first_line & operator, document_start_at)
    is_sum = (foreign_so_far == 0) & (first_line | (operators_so_far > 0))
    return CoupledPlaces(torch.where(is_sum, coupled, index - document_start_at), is_sum)


def _count_in_document(flags: torch.BoolTensor, document_start_at: torch.LongTensor) -> torch.LongTensor:
    """For each token, how many tokens of its document up to and including it have `flags`."""
    so_far = flags.long().cumsum(-1)
    return so_far - so_far.gather(-1, document_start_at) + flags.long().gather(-1, document_start_at)
