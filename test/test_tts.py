"""Speech synthesis with espeak-ng: real synthesis, word timings, determinism, errors (its speed:
tools/bench/tts_speed.py)."""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing as mp
import threading

import numpy as np
import pytest

from mtbi.errors import MtbiError
from mtbi.mini.tts import Synthesis, Synthesizer, Voice, WordTiming, _Event

SR = 22050
TEXT = "she walked to the end of the road with a friend"  # "of the" and "with a" merge in espeak


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer()


def _check_timings(result: Synthesis, text: str) -> None:
    words = text.split()
    x = result.samples
    assert result.sample_rate == SR
    assert x.dtype == np.float32 and x.ndim == 1 and x.size > 0
    assert np.abs(x).max() <= 1.0 and np.abs(x).max() > 0.05
    assert [w.word for w in result.words] == words
    duration = x.size / SR
    prev_end = 0.0
    for w in result.words:
        assert isinstance(w, WordTiming)
        assert prev_end <= w.start < w.end <= duration + 1e-9, w
        assert w.end - w.start >= 0.03, w  # every word has real duration
        prev_end = w.end
    # the word spans hold (almost) all of the signal energy, and each word has some of it
    power = x.astype(np.float64) ** 2
    spans = [power[round(w.start * SR):round(w.end * SR)] for w in result.words]
    assert sum(s.sum() for s in spans) >= 0.99 * power.sum()
    for w, s in zip(result.words, spans):
        assert s.mean() >= 0.01 * power.mean(), w
    # leading and trailing silence trimmed to a short margin
    assert result.words[0].start <= 0.06
    assert duration - result.words[-1].end <= 0.06


@pytest.mark.parametrize("voice", [
    Voice("en-us"),
    Voice("en-gb-x-rp", rate=140, pitch=70),
    Voice("en-gb-scotland+m3"),
    Voice("en-029", rate=220),
    Voice("en-us+f3", rate=200, pitch=40),
])
def test_word_timings(synth: Synthesizer, voice: Voice) -> None:
    _check_timings(synth.synthesize(TEXT, voice), TEXT)


@pytest.mark.parametrize("text", [
    "of the in the at the for a to the from the as a",  # espeak fuses most of these pairs
    "a lot of people are going to go",
    "hello",
    "xkcd nasa fbi ok",  # spelled-out letters give several word events per word
    "don't you think it's fine",
])
def test_one_timing_per_word(synth: Synthesizer, text: str) -> None:
    _check_timings(synth.synthesize(text, Voice("en-us")), text)


def test_long_text(synth: Synthesizer) -> None:
    text = " ".join(("the end of the road is far from the top of the hill " * 12).split())  # 156 words
    _check_timings(synth.synthesize(text, Voice("en-us")), text)


@pytest.mark.parametrize("a, b, k", [
    ("the man bought bread again", "the man bought milk again", 3),
    ("it got cold quickly", "it got warm quickly", 2),
    ("we kept five coins", "we kept nine coins", 2),
    ("she left rome early", "she left paris early", 2),
])
def test_word_start_is_where_the_audio_starts_to_differ(synth: Synthesizer, a: str, b: str, k: int) -> None:
    """Minimal pairs after a word ending in a stop: the waveforms are identical up to the
    word that differs, and the first differing sample is the timed start of that word."""
    ra, rb = synth.synthesize(a, Voice("en-us")), synth.synthesize(b, Voice("en-us"))
    assert ra.words[k].start == pytest.approx(rb.words[k].start, abs=1e-9)
    n = min(ra.samples.size, rb.samples.size)
    first_diff = np.flatnonzero(ra.samples[:n] != rb.samples[:n])[0] / SR
    assert first_diff == pytest.approx(ra.words[k].start, abs=0.002)


def test_final_word_matches_the_word_alone(synth: Synthesizer) -> None:
    voice = Voice("en-us")
    three = synth.synthesize("one two three", voice).words[-1]
    alone = synth.synthesize("three", voice).words[0]
    assert three.end - three.start == pytest.approx(alone.end - alone.start, abs=0.02)


def test_pause_is_not_part_of_a_word(synth: Synthesizer) -> None:
    """espeak pauses before some conjunctions; the previous word ends where its sound does."""
    result = synth.synthesize("i went home and then i slept", Voice("en-us"))
    home, and_ = result.words[2], result.words[3]
    assert and_.start - home.end >= 0.03
    gap = result.samples[round(home.end * SR) + 1:round(and_.start * SR)]
    assert np.sqrt(np.mean(gap.astype(np.float64) ** 2)) < 0.01 * np.abs(result.samples).max()


def test_faster_rate_is_shorter(synth: Synthesizer) -> None:
    slow = synth.synthesize(TEXT, Voice("en-us", rate=130))
    fast = synth.synthesize(TEXT, Voice("en-us", rate=260))
    assert fast.samples.size < 0.7 * slow.samples.size
    assert fast.words[-1].start < slow.words[-1].start
    _check_timings(slow, TEXT)
    _check_timings(fast, TEXT)


def test_deterministic(synth: Synthesizer) -> None:
    voice = Voice("en-us+f3", rate=190)
    first = synth.synthesize(TEXT, voice)
    synth.synthesize("something else entirely in between", Voice("en-gb-x-rp"))
    second = synth.synthesize(TEXT, voice)
    assert synth.bit_exact  # the bundled library has a symbol table
    assert first.samples.tobytes() == second.samples.tobytes()
    assert first.words == second.words


def _worker(args: tuple[str, Voice]) -> str:
    result = Synthesizer().synthesize(*args)
    return hashlib.sha1(result.samples.tobytes() + repr(result.words).encode()).hexdigest()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_one_synthesizer_per_worker_process(synth: Synthesizer, method: str) -> None:
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method")
    jobs = [(t, v) for t in (TEXT, "one two three") for v in (Voice("en-us"), Voice("en-029", rate=150))]
    with mp.get_context(method).Pool(2) as pool:
        got = pool.map(_worker, jobs * 2, chunksize=1)
    assert got == [_worker(j) for j in jobs * 2]


def test_threads_share_the_engine(synth: Synthesizer) -> None:
    texts = [f"number {w} is here" for w in ("one", "two", "three", "four", "five", "six")]
    expected = [synth.synthesize(t, Voice("en-us")).samples.tobytes() for t in texts]
    got: dict[int, bytes] = {}

    def run(i: int) -> None:
        got[i] = Synthesizer().synthesize(texts[i], Voice("en-us")).samples.tobytes()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(texts))] == expected


@pytest.mark.parametrize("voice", [
    Voice("xx-nosuch"), Voice("en-us+nosuch"), Voice("en-us", rate=20), Voice("en-us", pitch=150)])
def test_bad_voice(synth: Synthesizer, voice: Voice) -> None:
    with pytest.raises(MtbiError):
        synth.synthesize("hello there", voice)
    synth.synthesize("hello there", Voice("en-us"))  # the engine still works afterwards


def test_empty_text(synth: Synthesizer) -> None:
    with pytest.raises(MtbiError, match="nothing to synthesize"):
        synth.synthesize("   ", Voice("en-us"))


def test_event_struct_matches_speak_lib_h() -> None:
    # speak_lib.h: 6 ints, void *user_data, union {int; const char *; char[8]} id
    ptr = ctypes.sizeof(ctypes.c_void_p)
    assert _Event.user_data.offset == 24 and _Event.sample.offset == 20
    assert _Event.id.offset == 24 + ptr and ctypes.sizeof(_Event) == 24 + ptr + 8

