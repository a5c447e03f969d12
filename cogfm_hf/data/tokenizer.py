"""Our byte-level BPE tokenizer: trained with `tokenizers`, saved for `AutoTokenizer.from_pretrained(dir)`.

Digits are split into single tokens before BPE (arithmetic is learned per digit), the self-correction
marker is one token that is never merged but is *not* special: decoding with `skip_special_tokens=True`
(as lm-evaluation-harness does) must keep it, or a model's self-corrections vanish from its output.
No post-processor appends EOS: lm-evaluation-harness splits
context/continuation by tokenizing them separately, which an automatic EOS would break. The packer
appends EOS to each document itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..tasks import BACK

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
RESERVED_TOKENS = [PAD, BOS, EOS, UNK, BACK]  # ids 0..4, in this order


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=RESERVED_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # The trainer marks all its reserved tokens special; re-adding BACK as non-special keeps its id.
    tokenizer.add_tokens([AddedToken(BACK, special=False, normalized=False)])
    return wrap(tokenizer)


def wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
