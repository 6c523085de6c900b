"""Where the speech goes: the teacher's prompt, tokenized, with each token tied to a transcript word.

The SLLM sees exactly the token sequence the teacher saw (the chat-template rendering of the
task prompt with the transcript in its slot), except that the tokens of some transcript words
(all of them for speech input, some for interleaving, none for text input) are replaced by
speech frames. Tokenizing the whole rendered text once and mapping each token back to a word
through the tokenizer's character offsets keeps the text parts byte-identical to the teacher's
input, whatever the tokenizer (SentencePiece-style ``▁word`` or byte-level `` word`` pieces).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from mtbi.errors import MtbiError
from mtbi.tasks.bank import TRANSCRIPT_SLOT
from mtbi.tasks.prompting import render_prompt

TEMPLATE = -1  # word index of a token that belongs to the prompt template, not the transcript


@dataclass(frozen=True)
class PromptTokens:
    """The rendered prompt's token ids and, per token, the transcript word it spells
    (``TEMPLATE`` for template text). Transcript tokens are contiguous."""

    ids: list[int]
    word_of: list[int]
    num_words: int


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, transcript: str) -> PromptTokens:
    """Tokenize ``prompt`` with ``transcript`` in its slot, as the teacher's input, and map each
    token to its transcript word (``transcript.split()``) by character offsets."""
    marker = "\uE000"  # a private-use character no prompt contains
    shell = render_prompt(tokenizer, prompt.replace(TRANSCRIPT_SLOT, marker), "")
    if shell.count(marker) != 1:
        raise MtbiError(f"the chat template changed the transcript slot of prompt '{prompt}'")
    begin = shell.index(marker)
    text = shell[:begin] + transcript + shell[begin + 1:]
    word_starts, word_ends = [], []
    for match in re.finditer(r"\S+", transcript):
        word_starts.append(begin + match.start())
        word_ends.append(begin + match.end())
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    word_of = []
    for start, end in encoding["offset_mapping"]:
        chars = [i for i in range(start, end) if not text[i].isspace()]
        if not chars:  # a whitespace-only piece belongs to the word it precedes
            k = bisect.bisect_left(word_starts, end)
            word_of.append(k if begin <= start and k < len(word_starts) else TEMPLATE)
            continue
        words = {_word_at(i, word_starts, word_ends) for i in chars}
        if len(words) != 1:
            raise MtbiError(f"a token of prompt '{prompt}' spans several transcript words or the "
                            "transcript and the prompt text; put a space or punctuation around "
                            f"{TRANSCRIPT_SLOT} in the task bank")
        word_of.append(words.pop())
    inside = [i for i, w in enumerate(word_of) if w != TEMPLATE]
    if inside and inside != list(range(inside[0], inside[-1] + 1)):
        raise MtbiError(f"the transcript's tokens are not contiguous in prompt '{prompt}'")
    return PromptTokens(list(encoding["input_ids"]), word_of, len(word_starts))


def _word_at(index: int, starts: list[int], ends: list[int]) -> int:
    k = bisect.bisect_right(starts, index) - 1
    return k if k >= 0 and index < ends[k] else TEMPLATE
