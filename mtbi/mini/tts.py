"""Offline speech synthesis with exact word timings (espeak-ng through ctypes).

The synthesizer drives the espeak-ng C library in ``AUDIO_OUTPUT_SYNCHRONOUS``
mode: ``espeak_Synth`` returns only when the utterance is finished, and a synth
callback collects the 16-bit samples together with espeak's events.  Word
timings come from the ``espeakEVENT_WORD`` events: each carries the character
position of the word in the input text and the exact sample index at which the
word's speech starts (the ``sample`` field; ``audio_position`` is the same point
truncated to whole milliseconds).

Two properties of espeak-ng need care:

* **Word merging.**  English function words are fused with the next word
  ("of the", "in the", "of a", "from the" are spoken as one word, with a single
  WORD event), and multi-word dictionary entries do the same.  When a word gets
  no event, the text is synthesized again with a zero-width space (U+200B) in
  front of that word: the merge only happens when the next word starts with a
  letter, so every input word then gets its own event.  Only the words that
  merged get one, because espeak-ng drops words from long clauses (~90 words)
  when every word carries it.  Where nothing merged, the audio is bit-identical
  to that of the plain text.
* **Hidden state.**  The waveform generator keeps a few static variables across
  utterances (the pitch-flutter phase, a glottal cycle counter and the automatic
  gain), so the same text gives slightly different audio (a few samples of
  length) depending on what was synthesized before.  Before each utterance they
  are put back to their load-time values, located through the library's ELF
  symbol table, and the random seeds are reset; the output is then byte-exact
  and equal to the first utterance of a fresh process.  If the library is
  stripped the reset is skipped and :attr:`Synthesizer.bit_exact` is ``False``
  (output then varies by a few samples between calls).  Variants using the Klatt generator
  (``+klatt``, ``+klatt2`` ... and a few named ones) keep more state and are only
  reproducible in length, not in every sample value.

espeak-ng is a process-wide singleton: it is initialized once per process (and
shared by every :class:`Synthesizer` there, serialized with a lock).  In
multiprocessing, create one Synthesizer per worker; a forked child may also use
an engine inherited from its parent (synchronous mode runs no threads).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import os
import struct
import threading
from dataclasses import dataclass

import numpy as np

from mtbi.errors import MtbiError

__all__ = ["Voice", "WordTiming", "Synthesis", "Synthesizer"]


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: ``name`` like ``"en-us"``, ``"en-gb-x-rp"``, ``"en-029"``,
    optionally with a variant (``"en-us+f3"``); ``rate`` in words per minute
    (espeakRATE, 80-450); ``pitch`` 0-100 (espeakPITCH, 50 is the voice's normal)."""

    name: str
    rate: int = 175
    pitch: int = 50


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float  # seconds
    end: float  # seconds


@dataclass(frozen=True)
class Synthesis:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int  # espeak-ng's native rate (22050)
    words: list[WordTiming]  # one per input word, in order

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


# --- espeak-ng C API (speak_lib.h, API revision 12) ---------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_RATE_MIN, _RATE_MAX = 80, 450
_BUFLENGTH_MS = 200

_ZWSP = "\u200b"  # put in front of a word that espeak fused with the previous one


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),  # WORD and SENTENCE events
        ("name", ctypes.c_char_p),  # MARK and PLAY events
        ("string", ctypes.c_char * 8),  # PHONEME events
    ]


class _Event(ctypes.Structure):
    """espeak_EVENT."""

    _fields_ = [
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position in the text
        ("length", ctypes.c_int),  # word length in characters (WORD events)
        ("audio_position", ctypes.c_int),  # milliseconds into the output
        ("sample", ctypes.c_int),  # samples into the output
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _load_library() -> tuple[ctypes.CDLL, str | None]:
    """The espeak-ng library and its data directory (None: the library's default)."""
    try:
        import espeakng_loader
    except ImportError:
        espeakng_loader = None
    if espeakng_loader is not None:
        path = espeakng_loader.get_library_path()
        if os.path.exists(path):
            try:
                lib = ctypes.CDLL(path)
                return lib, espeakng_loader.get_data_path()
            except (OSError, RuntimeError) as e:
                raise MtbiError(f"cannot load espeak-ng from {path}: {e}") from e
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        return ctypes.CDLL(name), None
    except OSError:
        raise MtbiError(
            "espeak-ng library not found: install the Python package espeakng-loader "
            "(pip install espeakng-loader) or the system package libespeak-ng1"
        ) from None


def _elf_symbols(path: str, wanted: set[str]) -> dict[str, list[tuple[str, int, int, int]]]:
    """Symbols of a 64-bit little-endian ELF file whose base name is in ``wanted``.

    Returns {base name: [(full name, value, size, type)]}; a compiler may suffix
    function-local statics (``agc.6035``) or prefix them (``Wavegen.agc``).
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found: dict[str, list[tuple[str, int, int, int]]] = {}
    for sec in sections:
        if sec[1] != 2:  # SHT_SYMTAB only (absent when stripped)
            continue
        str_off = sections[sec[6]][4]
        for off in range(sec[4], sec[4] + sec[5], 24):
            name_off, info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", data, off)
            if shndx == 0 or name_off == 0:
                continue
            start = str_off + name_off
            name = data[start:data.index(b"\0", start)].decode("ascii", "replace")
            parts = name.split(".")
            for base in (parts[0], parts[-1]):
                if base in wanted:
                    found.setdefault(base, []).append((name, value, size, info & 0xF))
                    break
    return found


class _StateReset:
    """Puts espeak-ng's cross-utterance statics back to their load-time values."""

    # wavegen.c: pitch flutter phase, glottal cycle counter, automatic gain control
    _INITIAL = {"Flutter_ix": 0, "cycle_count": 0, "agc": 256}

    def __init__(self, lib: ctypes.CDLL):
        self.cells: list[tuple[ctypes.c_int, int]] = []
        self._srand = None
        self._espeak_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._espeak_seed is not None:
            self._espeak_seed.argtypes = [ctypes.c_long]
            self._espeak_seed.restype = ctypes.c_int
        try:
            libc = ctypes.CDLL(None)
            self._srand = libc.srand
            self._srand.argtypes = [ctypes.c_uint]
            self._srand.restype = None
            self.cells = self._locate(lib, libc)
        except (OSError, AttributeError, ValueError, struct.error):
            self.cells = []

    def _locate(self, lib: ctypes.CDLL, libc: ctypes.CDLL) -> list[tuple[ctypes.c_int, int]]:
        info = _DlInfo()
        anchor = ctypes.cast(lib.espeak_Synth, ctypes.c_void_p)
        if not libc.dladdr(anchor, ctypes.byref(info)) or not info.dli_fname or not info.dli_saddr:
            return []
        path = os.fsdecode(info.dli_fname)
        if not os.path.isfile(path):
            return []
        syms = _elf_symbols(path, set(self._INITIAL) | {"espeak_Synth"})
        synth = [s for s in syms.get("espeak_Synth", []) if s[0] == "espeak_Synth"]
        if len(synth) != 1:
            return []
        bias = info.dli_saddr - synth[0][1]
        cells = []
        for base, initial in self._INITIAL.items():
            cands = [s for s in syms.get(base, []) if s[3] == 1 and s[2] == 4]  # STT_OBJECT, int
            if len(cands) != 1:
                return []
            cell = ctypes.c_int.from_address(bias + cands[0][1])
            cells.append((cell, initial))
        # sanity: values a live engine can hold
        values = {base: cell.value for (base, _), (cell, _) in zip(self._INITIAL.items(), cells)}
        if not (0 <= values["agc"] <= 256 and 0 <= values["Flutter_ix"] < (1 << 20) and values["cycle_count"] >= 0):
            return []
        return cells

    @property
    def exact(self) -> bool:
        return bool(self.cells)

    def __call__(self) -> None:
        for cell, initial in self.cells:
            cell.value = initial
        if self._espeak_seed is not None:
            self._espeak_seed(1)
        if self._srand is not None:
            self._srand(1)  # glibc's initial seed; used by the breath noise


class _Engine:
    """The per-process espeak-ng instance."""

    def __init__(self):
        lib, data_path = _load_library()
        self.lib = lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p

        path_arg = data_path.encode() if data_path else None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFLENGTH_MS, path_arg, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise MtbiError(f"espeak-ng failed to initialize (data directory {data_path or 'default'})")
        self.sample_rate = rate
        home = ctypes.c_char_p()
        self.version = (lib.espeak_Info(ctypes.byref(home)) or b"?").decode()
        self.data_path = os.fsdecode(home.value) if home.value else data_path

        self._chunks: list[bytes] = []
        self._events: list[tuple[int, int, int]] = []  # (text_position, length, sample) of WORD events
        self._callback = _SynthCallback(self._on_synth)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.reset = _StateReset(lib)
        self.lock = threading.Lock()
        self._voice_ok: dict[str, bool] = {}

    def _on_synth(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, 2 * numsamples))
        if events:
            i = 0
            while True:
                ev = events[i]
                if ev.type == _EVENT_LIST_TERMINATED:
                    break
                if ev.type == _EVENT_WORD:
                    self._events.append((ev.text_position, ev.length, ev.sample))
                i += 1
        return 0

    def _check_variant(self, name: str) -> None:
        if "+" not in name or name in self._voice_ok:
            return
        variant = name.split("+", 1)[1]
        ok = bool(variant) and "/" not in variant and variant not in (".", "..")
        if ok and self.data_path:
            ok = os.path.isfile(os.path.join(self.data_path, "voices", "!v", variant))
        self._voice_ok[name] = ok
        if not ok:
            raise MtbiError(f"unknown espeak-ng voice variant {variant!r} in voice {name!r}")

    def set_voice(self, voice: Voice) -> None:
        if not isinstance(voice.name, str) or not voice.name or "\0" in voice.name:
            raise MtbiError(f"invalid espeak-ng voice name {voice.name!r}")
        if self._voice_ok.get(voice.name) is False:
            raise MtbiError(f"unknown espeak-ng voice {voice.name!r}")
        self._check_variant(voice.name)
        if not _RATE_MIN <= voice.rate <= _RATE_MAX:
            raise MtbiError(f"voice rate {voice.rate} out of range {_RATE_MIN}-{_RATE_MAX} words per minute")
        if not 0 <= voice.pitch <= 100:
            raise MtbiError(f"voice pitch {voice.pitch} out of range 0-100")
        # Set the voice every time: it also clears the echo buffer of the last utterance.
        if self.lib.espeak_SetVoiceByName(voice.name.encode("utf-8")) != _EE_OK:
            self._voice_ok[voice.name] = False
            raise MtbiError(f"unknown espeak-ng voice {voice.name!r} (see `espeak-ng --voices`)")
        self._voice_ok.setdefault(voice.name, True)
        self.lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """int16 samples and the WORD events (text_position, length, sample)."""
        self.set_voice(voice)
        self.reset()
        # re-register: another user of the same library in this process may have replaced it
        self.lib.espeak_SetSynthCallback(self._callback)
        self._chunks = []
        self._events = []
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        err = self.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        chunks, events = self._chunks, self._events
        self._chunks, self._events = [], []
        if err != _EE_OK:
            raise MtbiError(f"espeak-ng failed (error {err}) on text {text!r}")
        samples = np.frombuffer(b"".join(chunks), dtype="<i2")
        return samples, events


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = _Engine()
    return _engine


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at fork time.
    if _engine is not None:
        _engine.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- timing post-processing ---------------------------------------------------

SILENCE_DB = 40.0  # a 10 ms window is silent when its RMS is this far below the loudest window
MARGIN_S = 0.05  # leading/trailing silence kept around the utterance
FRAME_S = 0.010  # energy window
HOP_S = 0.001  # resolution of the word-end search


def _window_energy(cs: np.ndarray, ends: np.ndarray, frame: int) -> np.ndarray:
    """Mean square of x[end - frame:end] for each end (clipped at 0), from the cumulative sum."""
    starts = np.maximum(ends - frame, 0)
    return (cs[ends] - cs[starts]) / np.maximum(ends - starts, 1)


def _align(samples: np.ndarray, sr: int, words: list[str], starts: list[int]) -> tuple[np.ndarray, list[WordTiming]]:
    """Trim the utterance and turn word start samples into WordTimings."""
    n = len(samples)
    frame = max(1, int(round(FRAME_S * sr)))
    hop = max(1, int(round(HOP_S * sr)))
    x = samples.astype(np.float64)
    cs = np.concatenate([[0.0], np.cumsum(x * x)])
    # loudest 10 ms window on a 1 ms grid
    grid = np.arange(min(frame, n), n + 1, hop)
    if len(grid) == 0 or grid[-1] != n:
        grid = np.append(grid, n)
    energy = _window_energy(cs, grid, frame)
    peak = float(energy.max()) if len(energy) else 0.0
    if peak <= 0.0:
        raise MtbiError("espeak-ng produced no audio")
    thr = peak * 10.0 ** (-SILENCE_DB / 10.0)
    loud = np.flatnonzero(energy >= thr)
    speech_start = int(max(0, grid[loud[0]] - frame))  # window ending at grid[i] covers grid[i]-frame..grid[i]
    speech_end = int(grid[loud[-1]])

    min_len = frame
    bounds = []
    for i, s in enumerate(starts):
        s = min(max(s, speech_start), speech_end)
        e = starts[i + 1] if i + 1 < len(starts) else speech_end
        e = min(max(e, s), speech_end)
        # shrink the end back over trailing silence, 1 ms steps, 10 ms windows
        if e - s > min_len:
            cand = np.arange(e, s + min_len - 1, -hop)
            silent = _window_energy(cs, cand, frame) < thr
            k = int(np.argmin(silent)) if not silent.all() else len(cand) - 1
            e = int(cand[k])
        bounds.append((s, e))

    cut0 = max(0, speech_start - int(round(MARGIN_S * sr)))
    cut1 = min(n, speech_end + int(round(MARGIN_S * sr)))
    out = (samples[cut0:cut1].astype(np.float32) / np.float32(32768.0))
    timings = [
        WordTiming(w, (s - cut0) / sr, (e - cut0) / sr) for w, (s, e) in zip(words, bounds)
    ]
    return out, timings


class Synthesizer:
    """Text to speech with word timings.  Cheap to create; the engine is shared per process."""

    def __init__(self):
        self._engine = _get_engine()

    @property
    def sample_rate(self) -> int:
        return self._engine.sample_rate

    @property
    def bit_exact(self) -> bool:
        """Whether the same text and voice give the same bytes on every call in this process."""
        return self._engine.reset.exact

    def synthesize(self, text: str, voice: Voice) -> Synthesis:
        words = text.split()
        if not words:
            raise MtbiError(f"nothing to synthesize in text {text!r}")
        eng = self._engine
        # First pass on the plain text.  If espeak fused a word into the one before it
        # (no WORD event for it), put a zero-width space in front of that word and
        # synthesize again; repeat while that fixes something.
        separated: set[int] = set()
        with eng.lock:
            for _ in range(_MAX_PASSES):
                synth_text, spans = _espeak_text(words, separated)
                samples, events = eng.synth(synth_text, voice)
                starts, stray = _match_events(events, spans)
                missing = [i for i, s in enumerate(starts) if s is None]
                fixable = {i for i in missing if i > 0} - separated
                if not missing or stray or not fixable:
                    break
                separated |= fixable
        if len(samples) == 0:
            raise MtbiError(f"espeak-ng produced no audio for text {text!r}")
        if missing or stray:
            raise MtbiError(
                f"espeak-ng word events do not match the text {text!r} ({len(events)} events for "
                f"{len(words)} words; no event for {[words[i] for i in missing]})"
            )
        if any(b < a for a, b in zip(starts, starts[1:])):
            raise MtbiError(f"espeak-ng word events out of order for text {text!r}")
        out, timings = _align(samples, eng.sample_rate, words, starts)  # type: ignore[arg-type]
        return Synthesis(samples=out, sample_rate=eng.sample_rate, words=timings)


_MAX_PASSES = 4


def _espeak_text(words: list[str], separated: set[int]) -> tuple[str, list[int]]:
    """espeak's input and each word's first character position (1-based, as espeak counts;
    a zero-width space put in front of a word belongs to it)."""
    pieces, spans, pos = [], [], 1
    for i, w in enumerate(words):
        if i:
            pieces.append(" ")
            pos += 1
        spans.append(pos)
        if i in separated:
            pieces.append(_ZWSP)
            pos += 1
        pieces.append(w)
        pos += len(w)
    return "".join(pieces), spans


def _match_events(events: list[tuple[int, int, int]], spans: list[int]) -> tuple[list[int | None], int]:
    """First WORD event sample of each word (None: no event), and the count of events
    that fall before the first word.  A word can have several events (spelled letters)."""
    starts: list[int | None] = [None] * len(spans)
    stray = 0
    for text_pos, _length, sample in events:
        i = bisect.bisect_right(spans, text_pos) - 1
        if i < 0:
            stray += 1
        elif starts[i] is None:
            starts[i] = sample
    return starts, stray
