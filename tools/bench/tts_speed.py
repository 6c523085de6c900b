#!/usr/bin/env python3
"""Benchmark: speech synthesis with word timings (``Synthesizer.synthesize``, what stage 1 runs to
build the mini corpus) against espeak-ng alone on the same text (the baseline: one synthesis
pass, no word events matched, no silence trimmed), measured in the same run, both as a multiple
of real time (seconds of speech made a second).

    tools/venv/bin/python tools/bench/tts_speed.py [--sentences 100] [--repeats 3]

Synthesizes --sentences mini-corpus sentences, each in the voice of one of the corpus's speakers
in turn, in one process; prints the speech made a second by each (best of --repeats), its ratio
to the baseline, and the time of one synthesis of the sentence the test suite once timed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Callable

from mtbi.bench.stamp import table_stamp
from mtbi.mini.corpus import SPEAKERS, generate_sentences, load_lexicon
from mtbi.mini.tts import Synthesizer, Voice, _get_engine

SHORT = "the quick brown fox jumps over the lazy dog again today"


def best_seconds(synthesize: Callable[[str, Voice], float], jobs: list[tuple[str, Voice]], repeats: int) -> tuple[float, float]:
    """The fastest of ``repeats`` passes of ``synthesize`` over ``jobs``, and the seconds of speech it made."""
    times, speech = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        speech = sum(synthesize(text, voice) for text, voice in jobs)
        times.append(time.perf_counter() - start)
    return min(times), speech


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    voices = [s.voice for speakers in SPEAKERS.values() for s in speakers]
    texts = generate_sentences(args.sentences, random.Random(0), set(), load_lexicon())
    jobs = [(text, voices[n % len(voices)]) for n, text in enumerate(texts)]
    synthesizer, engine = Synthesizer(), _get_engine()

    def espeak_alone(text: str, voice: Voice) -> float:
        with engine.lock:
            samples, _ = engine.synth(text, voice)
        return len(samples) / engine.sample_rate

    ways = {"espeak-ng alone (baseline)": espeak_alone,
            "Synthesizer with word timings": lambda text, voice: synthesizer.synthesize(text, voice).duration}
    for synthesize in ways.values():  # warm-up: loads every voice once
        best_seconds(synthesize, jobs[:len(voices)], 1)
    seconds, speech = {}, {}
    for name, synthesize in ways.items():
        seconds[name], speech[name] = best_seconds(synthesize, jobs, args.repeats)
    print(f"{args.sentences} sentences in {len(voices)} voices, one process, best of {args.repeats}")
    baseline = speech["espeak-ng alone (baseline)"] / seconds["espeak-ng alone (baseline)"]
    for name, took in seconds.items():
        rate = speech[name] / took
        print(f"{name + ':':31s} {rate:7.1f}x real time ({speech[name]:.0f} s of speech in {took:.2f} s)  "
              f"{rate / baseline:5.2f}x")
    took, _ = best_seconds(ways["Synthesizer with word timings"], [(SHORT, Voice("en-us"))] * 20, args.repeats)
    print(f"one synthesis of {SHORT!r}: {1000 * took / 20:.1f} ms")


if __name__ == "__main__":
    main()
