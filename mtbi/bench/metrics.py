"""Answer metrics: exact match, BLEU and chrF (sacrebleu), ROUGE-L (rouge-score), WER (jiwer), and the
test of whether an answer is a mere transcription of the input."""

from __future__ import annotations

import functools
import re

import jiwer
import sacrebleu
from rouge_score import rouge_scorer

# A teacher answer whose word error rate against the transcript is at most this is itself a
# transcription (a verbatim or near-verbatim copy of the input): on such an item a copy of the
# input cannot be told from an answer, so task following leaves it out.
TRANSCRIPTION_MAX_WER = 0.25
# An answer with fewer words than this share of the transcript's is never taken for a transcription,
# whatever words of the input it repeats (e.g. a wrong answer to an extraction question).
TRANSCRIPTION_MIN_LENGTH = 0.5


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


def follows_task(answer: str, transcript: str, task_answer: str) -> bool:
    """Whether ``answer`` does the task (whose right answer is ``task_answer``) rather than
    transcribe the input, well or badly: it is not empty, and it is shorter than
    TRANSCRIPTION_MIN_LENGTH of the transcript in words or not closer to the transcript than to
    the task's answer (ROUGE-L F1). A misrecognized transcription is long and closer to the
    transcript, so it does not pass, whatever its word error rate."""
    answer, transcript, task_answer = (normalize_answer(t) for t in (answer, transcript, task_answer))
    if not answer:
        return False
    if len(answer.split()) < TRANSCRIPTION_MIN_LENGTH * len(transcript.split()):
        return True
    return rouge_l_f1(answer, transcript) <= rouge_l_f1(answer, task_answer)
