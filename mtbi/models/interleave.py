"""Speech-text interleaving: some transcript words are given as their speech frames.

The whole utterance is encoded once; a policy picks word spans, and the prompt's tokens for
those words are replaced by the connector frames between the span's start and end times (from
``word_align``), spliced between the text tokens of the other words. A run of replaced words
that reaches the first (last) word extends to the start (end) of the utterance, so replacing
every word gives exactly the speech-only input, and replacing none the text-only input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mtbi.errors import MtbiError
from mtbi.models.speech_prompt import TEMPLATE, PromptTokens


@dataclass(frozen=True)
class InterleaveConfig:
    """``data.interleave`` in a training config."""

    prob: float = 0.0       # share of training examples that are interleaved (the rest: speech only)
    min_ratio: float = 0.3  # share of the words given as speech, drawn uniformly per example
    max_ratio: float = 0.7
    min_span: int = 1       # words per replaced span, drawn uniformly per span
    max_span: int = 4
    until_step: int = 0     # > 0: interleave only in the first until_step training steps, then speech
                            # only (a curriculum); 0: in every step

    def __post_init__(self) -> None:
        if not (0 <= self.prob <= 1 and 0 <= self.min_ratio <= self.max_ratio <= 1
                and 1 <= self.min_span <= self.max_span and self.until_step >= 0):
            raise MtbiError("interleave: need 0 <= prob <= 1, 0 <= min_ratio <= max_ratio <= 1, "
                            f"1 <= min_span <= max_span and until_step >= 0; got {self}")


class InterleavePolicy:
    """Chooses which words of an utterance are given as speech."""

    def __init__(self, config: InterleaveConfig) -> None:
        self.config = config

    def choose(self, num_words: int, rng: random.Random, step: int = 0) -> list[bool]:
        """Per word, True when it is given as speech: all words with probability ``1 - prob``
        (and always from ``until_step`` on, when it is set), else spans of ``min_span..max_span``
        words covering a drawn share of the words. ``step``: the training step (from 0)."""
        if rng.random() >= self.config.prob or 0 < self.config.until_step <= step:
            return [True] * num_words
        return replace_spans(num_words, rng.uniform(self.config.min_ratio, self.config.max_ratio),
                             self.config.min_span, self.config.max_span, rng)


def replace_spans(num_words: int, ratio: float, min_span: int, max_span: int, rng: random.Random) -> list[bool]:
    """Mark about ``ratio * num_words`` words (rounded) in random spans of ``min_span..max_span``."""
    target = round(ratio * num_words)
    replaced = [False] * num_words
    count = 0
    while count < target:
        length = min(rng.randint(min_span, max_span), target - count)
        free = [i for i in range(num_words - length + 1) if not any(replaced[i:i + length])]
        if not free:  # no gap that long is left: fill the first free words one at a time
            length, free = 1, [replaced.index(False)]
        start = rng.choice(free)
        replaced[start:start + length] = [True] * length
        count += length
    return replaced


@dataclass(frozen=True)
class TextSegment:
    ids: list[int]


@dataclass(frozen=True)
class SpeechSegment:
    """Speech frames from ``start`` to ``end`` seconds; None: the utterance's start or end."""

    start: float | None
    end: float | None


Segment = TextSegment | SpeechSegment


def build_segments(tokens: PromptTokens, replaced: list[bool],
                   word_times: list[tuple[float, float]] | None) -> list[Segment]:
    """The prompt as text and speech segments: the tokens of each run of replaced words become
    one speech segment. ``word_times`` (start, end per word) is needed unless no word or every
    word is replaced."""
    if len(replaced) != tokens.num_words:
        raise MtbiError(f"{len(replaced)} replacement flags for {tokens.num_words} words")
    partial = 0 < sum(replaced) < tokens.num_words
    if partial and (word_times is None or len(word_times) != tokens.num_words):
        raise MtbiError("interleaving needs one (start, end) time per transcript word")
    last = tokens.num_words - 1
    segments: list[Segment] = []
    text: list[int] = []
    run: list[int] = []  # replaced words of the current speech run

    def close_run() -> None:
        if run:
            start = None if run[0] == 0 or not partial else word_times[run[0]][0]
            end = None if run[-1] == last or not partial else word_times[run[-1]][1]
            segments.append(SpeechSegment(start, end))
            run.clear()

    for token, word in zip(tokens.ids, tokens.word_of):
        if word != TEMPLATE and replaced[word]:
            if text:
                segments.append(TextSegment(text))
                text = []
            if not run or run[-1] != word:
                run.append(word)
            continue
        close_run()
        text.append(token)
    close_run()
    if text:
        segments.append(TextSegment(text))
    return segments
