"""The audio of a data dir's utterances: its ``wav.scp`` entries, cut by ``segments`` when it has one.

A ``wav.scp`` value is, as in Kaldi and ESPnet:

- a path to an audio file in any libsndfile format (FLAC, WAV, MP3, OGG), read with soundfile;
  a segment seeks to its samples instead of reading the whole recording;
- a command whose standard output is the audio, ending in ``|`` (``flac -c -d -s x.flac |``,
  ``sph2pipe -f wav x.sph |``, ``sox x.mp3 -t wav - |``), run by kaldiio's ``open_like_kaldi``;
- an ark offset ``x.ark:123`` of audio stored in a Kaldi archive, read by kaldiio.

With ``segments`` (``utt recording start end``, seconds) the keys of ``wav.scp`` are recordings and an
utterance is the samples from start to end. An end past the recording by at most
:data:`MAX_OVERSHOOT` is cut at the recording's end (Kaldi's ``extract-segments`` does the same);
further is an error. Samples are mono float32 at 16 kHz (:mod:`mtbi.data.audio`).
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbi.data.audio import AudioError, load_audio, probe_audio, resampled_length, to_mono_16k
from mtbi.data.datadir import read_table
from mtbi.errors import MtbiError

MAX_OVERSHOOT = 0.5  # seconds a segment may end past its recording (cut there), as in Kaldi
ARK_OFFSET = re.compile(r"^(?P<ark>.+):(?P<offset>\d+)$")
EXIT_COMMAND_NOT_FOUND = 127


@dataclass(frozen=True)
class Segment:
    """One line of ``segments``: an utterance's span of a recording."""

    recording: str
    start: float
    end: float


def entry_kind(entry: str) -> str:
    """``pipe``, ``ark`` or ``file``: how a ``wav.scp`` value is read."""
    if entry.rstrip().endswith("|"):
        return "pipe"
    match = ARK_OFFSET.match(entry)
    if match and not Path(entry).exists() and match["ark"].endswith(".ark"):
        return "ark"
    return "file"


def read_segments(path: str | Path) -> dict[str, Segment]:
    """``segments`` as ``{utt: Segment}``; a malformed line is a one-line error naming it."""
    segments = {}
    for lineno, (utt, value) in enumerate(read_table(path).items(), 1):
        fields = value.split()
        try:
            recording, start, end = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise MtbiError(f"{path}:{lineno}: expected 'utt recording start end' (seconds)") from None
        if len(fields) != 3 or not 0 <= start < end:
            raise MtbiError(f"{path}:{lineno}: expected 'utt recording start end' with 0 <= start < end")
        segments[utt] = Segment(recording, start, end)
    return segments


class AudioTable:
    """The utterances of a data dir (``wav.scp`` and optional ``segments``) as 16 kHz mono samples.

    Decoded recordings of pipes and arks are kept for the next few segments
    (``cached_recordings``), since segments of one recording usually follow each other.
    """

    def __init__(self, data_dir: str | Path, allow_upsample: bool = False, cached_recordings: int = 4) -> None:
        """``data_dir``: a data dir, or a scp file (``utt entry`` lines); a file named ``wav.scp``
        takes the ``segments`` beside it, as its data dir would."""
        source = Path(data_dir)
        wav_scp = source if source.is_file() else source / "wav.scp"
        self.data_dir = wav_scp.parent
        self.allow_upsample = allow_upsample
        self.wav_scp = read_table(wav_scp)
        segments_file = self.data_dir / "segments"
        has_segments = wav_scp.name == "wav.scp" and segments_file.is_file()
        self.segments = read_segments(segments_file) if has_segments else None
        if self.segments is not None:
            missing = sorted({s.recording for s in self.segments.values()} - set(self.wav_scp))
            if missing:
                raise MtbiError(f"{segments_file}: recording '{missing[0]}' (and {len(missing) - 1} more) is not "
                                f"in {wav_scp}")
        self._decoded: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._cached_recordings = cached_recordings

    @property
    def utts(self) -> list[str]:
        """The utterance ids, sorted."""
        return sorted(self.segments if self.segments is not None else self.wav_scp)

    def describe(self, utt: str) -> str:
        """Where ``utt``'s audio comes from, for messages."""
        if self.segments is None:
            return self.wav_scp[utt]
        seg = self.segments[utt]
        return f"{self.wav_scp[seg.recording]} [{seg.start:.2f}-{seg.end:.2f} s of {seg.recording}]"

    def load(self, utt: str) -> np.ndarray:
        """The samples of ``utt``: float32 mono at 16 kHz. Raises :class:`AudioError` naming the
        entry for audio that cannot be used (missing, corrupt, failing command, segment past the end)."""
        if self.segments is None:
            entry = self.wav_scp[utt]
            if entry_kind(entry) == "file":
                return load_audio(entry, allow_upsample=self.allow_upsample)
            samples, rate = self._decode(utt, entry)
            return to_mono_16k(entry, samples, rate, self.allow_upsample)
        seg = self.segments[utt]
        entry = self.wav_scp[seg.recording]
        if entry_kind(entry) == "file":
            samples, rate = self._read_file_span(utt, entry, seg)
        else:
            samples, rate = self._decode(seg.recording, entry)
            first, last = self._span(utt, seg, rate, samples.shape[0], entry)
            samples = samples[first:last]
        return to_mono_16k(self.describe(utt), samples, rate, self.allow_upsample)

    def num_samples(self, utt: str) -> int:
        """``utt``'s length in samples at 16 kHz, from the file header where that suffices (a plain
        file without segments), else by reading its audio."""
        if self.segments is None and entry_kind(self.wav_scp[utt]) == "file":
            info = probe_audio(self.wav_scp[utt], allow_upsample=self.allow_upsample)
            if info.frames:  # MP3 headers may not know their length: decode those
                return resampled_length(info.frames, info.sample_rate)
        return int(self.load(utt).shape[0])

    # -- reading --------------------------------------------------------------------------------
    def _decode(self, key: str, entry: str) -> tuple[np.ndarray, int]:
        """Samples ``(N, channels)`` and rate of a pipe or ark entry, kept for the next segments."""
        if key in self._decoded:
            self._decoded.move_to_end(key)
            return self._decoded[key]
        decoded = read_pipe(entry) if entry_kind(entry) == "pipe" else read_ark(entry)
        self._decoded[key] = decoded
        while len(self._decoded) > self._cached_recordings:
            self._decoded.popitem(last=False)
        return decoded

    def _read_file_span(self, utt: str, path: str, seg: Segment) -> tuple[np.ndarray, int]:
        import soundfile as sf

        info = probe_audio(path, allow_upsample=self.allow_upsample)
        first, last = self._span(utt, seg, info.sample_rate, info.frames, path)
        try:
            samples, rate = sf.read(path, start=first, stop=last, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(Path(path), "unreadable audio", f"{err}; replace or remove the file") from None
        return samples, rate

    def _span(self, utt: str, seg: Segment, rate: int, total: int, entry: str) -> tuple[int, int]:
        """The sample range of ``seg`` in a recording of ``total`` samples at ``rate``."""
        length = total / rate
        if seg.end > length + MAX_OVERSHOOT or seg.start >= length:
            raise AudioError(Path(entry), "segment past the end of its recording",
                             f"segment '{utt}' ({seg.start:.2f}-{seg.end:.2f} s) of '{seg.recording}', which "
                             f"lasts {length:.2f} s; fix {self.data_dir / 'segments'}")
        return round(seg.start * rate), min(round(seg.end * rate), total)


def read_pipe(entry: str) -> tuple[np.ndarray, int]:
    """Run the command of a ``cmd |`` entry and read its output as audio: ``(N, channels)`` float32
    samples and their rate. A failing command or output that is not audio is an :class:`AudioError`;
    a command that is not installed stops everything (:class:`MtbiError`), since every entry would fail."""
    import kaldiio
    import soundfile as sf

    with kaldiio.open_like_kaldi(entry, "rb") as stream:
        data = stream.read()
        status = stream.close()
    command = entry.rstrip()[:-1].strip()
    if status:
        code = status >> 8
        if code == EXIT_COMMAND_NOT_FOUND:
            raise MtbiError(f"wav.scp command '{command}': command not found (exit 127); install it or "
                            "put it on PATH (path.sh)")
        raise AudioError(Path(command), f"command failed with exit status {code}",
                         "its error output is above; fix or remove the entry")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(Path(command), "command output is not audio",
                         f"{err}; the command must write WAV or FLAC to stdout") from None
    return samples, rate


def read_ark(entry: str) -> tuple[np.ndarray, int]:
    """Audio stored at an ark offset (``x.ark:123``): ``(N, channels)`` float32 samples and rate."""
    import kaldiio

    try:
        loaded = kaldiio.load_mat(entry)
    except (OSError, ValueError) as err:
        raise AudioError(Path(entry), "unreadable ark entry", f"{err}; fix the entry or rewrite the ark") from None
    if not isinstance(loaded, tuple):
        raise AudioError(Path(entry), "ark entry is a matrix, not audio", "wav.scp must point at audio")
    rate, samples = loaded
    samples = np.asarray(samples)
    scale = float(np.iinfo(samples.dtype).max + 1) if np.issubdtype(samples.dtype, np.integer) else 1.0
    samples = samples.astype(np.float32) / scale
    return (samples[:, None] if samples.ndim == 1 else samples), int(rate)

