"""The right answer of each task for a sentence of the mini corpus, by rule.

Mini sentences follow one grammar (see ``mtbi/mini/lexicon.yaml``)::

    the <adjective> <subject> <verb> <number> <color> <object> in the <place> [<time>]

so every task has one checkable answer: the tiny teacher is trained on these answers, and the
benchmark scores the task's reference with them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

from mtbi.errors import MtbiError
from mtbi.mini.corpus import load_lexicon
from mtbi.tasks.prompting import normalize_transcript


@dataclass(frozen=True)
class MiniSentence:
    """The slots of a parsed mini sentence (lower case)."""

    words: tuple[str, ...]
    adjective: str
    subject: str
    verb: str
    number: str
    color: str
    object: str
    place: str
    time: str | None


@functools.lru_cache(maxsize=1)
def _lexicon() -> dict:
    lexicon = load_lexicon()
    lexicon["sentiment_of"] = {a: s for s, words in lexicon["adjectives"].items() for a in words}
    lexicon["topic_of"] = {o: t for t, words in lexicon["objects"].items() for o in words}
    return lexicon


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.findall(r"[a-z']+", text.lower())


def parse_mini_sentence(text: str) -> MiniSentence | None:
    """Parse ``text`` with the mini grammar; None if it is not a mini sentence."""
    lex = _lexicon()
    w = words_of(text)
    if len(w) < 10 or w[0] != "the" or w[7:9] != ["in", "the"]:
        return None
    time = " ".join(w[10:]) or None
    if (w[1] not in lex["sentiment_of"] or w[2] not in lex["subjects"] or w[3] not in lex["verbs"]
            or w[4] not in lex["numbers"] or w[5] not in lex["colors"] or w[6] not in lex["topic_of"]
            or w[9] not in lex["places"] or (time is not None and time not in lex["times"])):
        return None
    return MiniSentence(tuple(w), w[1], w[2], w[3], w[4], w[5], w[6], w[9], time)


def _future(s: MiniSentence) -> str:
    base = _lexicon()["verbs"][s.verb][0]
    return f"the {s.adjective} {s.subject} will {base} {s.number} {s.color} {s.object} in the {s.place}"


def _passive(s: MiniSentence) -> str:
    participle = _lexicon()["verbs"][s.verb][1]
    time = f" {s.time}" if s.time else ""
    return (f"{s.number} {s.color} {s.object} were {participle} by the {s.adjective} {s.subject} "
            f"in the {s.place}{time}")


RULES: dict[str, Callable[[MiniSentence], str]] = {
    "continuation": lambda s: f"then the {s.subject} took the {s.object} home",
    "qa_subject": lambda s: f"the {s.subject}",
    "qa_place": lambda s: f"in the {s.place}",
    "qa_number": lambda s: s.number,
    "qa_color": lambda s: s.color,
    "keywords": lambda s: f"{s.subject}, {s.object}, {s.place}",
    "summary": lambda s: f"a {s.adjective} {s.subject} {s.verb} {s.object}",
    "paraphrase": _passive,
    "future_tense": _future,
    "sentiment": lambda s: _lexicon()["sentiment_of"][s.adjective],
    "topic": lambda s: _lexicon()["topic_of"][s.object],
    "word_count": lambda s: str(len(s.words)),
    "reverse_words": lambda s: " ".join(reversed(s.words)),
    "first_letters": lambda s: " ".join(w[0] for w in s.words),
}
RULE_NAMES = ("transcript",) + tuple(RULES)


def rule_answer(rule: str, transcript: str) -> str | None:
    """The rule's answer for ``transcript``; None when it is not a mini sentence.

    ``transcript`` is the normalized transcript, the rule ``transcript`` answers it unchanged.
    """
    if rule == "transcript":
        return normalize_transcript(transcript)
    if rule not in RULES:
        raise MtbiError(f"unknown task rule '{rule}'; rules: {', '.join(RULE_NAMES)}")
    sentence = parse_mini_sentence(transcript)
    return None if sentence is None else RULES[rule](sentence)
