"""Answer metrics: exact match, BLEU and chrF (sacrebleu), ROUGE-L (rouge-score), WER (jiwer), and the
test of whether an answer is a mere transcription of the input."""

from __future__ import annotations

import functools
import re

import jiwer
import sacrebleu
from rouge_score import rouge_scorer

# An answer whose word error rate against the transcript is at most this is a transcription
# (a verbatim or near-verbatim copy of the input) rather than an answer to the task.
TRANSCRIPTION_MAX_WER = 0.25


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed (apostrophes kept), whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def exact_match(hyps: list[str], refs: list[str]) -> float:
    """Fraction of answers equal to their reference after :func:`normalize_answer`."""
    if not hyps:
        return float("nan")
    return sum(normalize_answer(h) == normalize_answer(r) for h, r in zip(hyps, refs)) / len(hyps)


def bleu(hyps: list[str], refs: list[str]) -> float:
    """Corpus BLEU (0-100) by sacrebleu with its default 13a tokenizer."""
    if not hyps:
        return float("nan")
    return sacrebleu.corpus_bleu(hyps, [refs]).score


@functools.lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l_f1(hyp: str, ref: str) -> float:
    """ROUGE-L F-measure (0-1) of one answer by rouge-score."""
    return _rouge().score(ref, hyp)["rougeL"].fmeasure


def rouge_l(hyps: list[str], refs: list[str]) -> float:
    """Mean ROUGE-L F-measure (0-1) by rouge-score."""
    if not hyps:
        return float("nan")
    return sum(rouge_l_f1(h, r) for h, r in zip(hyps, refs)) / len(hyps)


def chrf(hyp: str, ref: str) -> float:
    """Sentence chrF (0-1) of one answer by sacrebleu (character 6-grams, beta 2)."""
    return sacrebleu.sentence_chrf(hyp, [ref]).score / 100


def word_error_rate(hyps: list[str], refs: list[str]) -> float:
    """Corpus WER (errors / reference words) of normalized answers by jiwer; an empty answer
    counts every reference word as deleted."""
    if not hyps:
        return float("nan")
    refs = [normalize_answer(r) for r in refs]
    hyps = [normalize_answer(h) for h in hyps]
    words = sum(len(r.split()) for r in refs)
    errors = 0
    for h, r in zip(hyps, refs):
        if not r:
            errors += len(h.split())
        elif not h:
            errors += len(r.split())
        else:
            out = jiwer.process_words(r, h)
            errors += out.substitutions + out.deletions + out.insertions
    return errors / max(1, words)


def is_transcription(answer: str, transcript: str) -> bool:
    """True when ``answer`` is (nearly) the transcript itself: WER <= TRANSCRIPTION_MAX_WER."""
    answer, transcript = normalize_answer(answer), normalize_answer(transcript)
    if not answer or not transcript:
        return False
    return word_error_rate([answer], [transcript]) <= TRANSCRIPTION_MAX_WER
