"""Word alignments: ``data/<set>/word_align``, CTM and TextGrid import, checks against the transcript.

``word_align`` has one word a line, ``utt start end word`` (seconds, 3 decimals), grouped by
utterance in sorted (C-locale) order, words in transcript order; word ``i`` of an utterance is
token ``i`` of its ``text`` line. Utterances without a usable alignment are listed with the
reason in ``word_align.skipped`` (``utt<TAB>reason<TAB>detail``) and left out.

An aligner sharded over jobs (stage 3's CTC) writes, per shard ``k``, the same two formats to
``<data_dir>/align/shards/word_align.<k>`` and ``word_align.skipped.<k>`` (marker ``.<k>.done``;
job logs go to ``<data_dir>/align/log``); the merge writes ``word_align`` and
``word_align.skipped`` exactly as one process does.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

from mtbi.data.audio import FRAME_SHIFT
from mtbi.data.datadir import read_table
from mtbi.errors import MtbiError
from mtbi.stage import atomic_write, marker, merge_step, shard_slice, shard_step

logger = logging.getLogger(__name__)

MAX_CLIP = 0.1              # words ending at most this far past the audio end are clipped
NON_WORDS = {"", "sil", "sp"}  # silence labels of aligners, not words
UNKNOWN_WORD = "<unk>"      # MFA's label for an out-of-vocabulary word: matches any token
ALIGN_DIR = "align"         # <data_dir>/align: shards/ and log/ of an alignment sharded over jobs


@dataclass(frozen=True)
class WordSpan:
    """One word of an utterance and its time span in seconds."""

    utt: str
    start: float
    end: float
    word: str


class AlignmentError(MtbiError):
    """An utterance whose alignment cannot be used: a short ``reason`` to count, a ``detail``."""

    def __init__(self, utt: str, reason: str, detail: str) -> None:
        super().__init__(f"{utt}: {reason} ({detail})")
        self.utt = utt
        self.reason = reason
        self.detail = detail


def _ms(seconds: float) -> float:
    """Times are kept to the millisecond, the precision of every file written here."""
    return round(seconds, 3)


def read_word_align(path: str | Path) -> dict[str, list[WordSpan]]:
    """Read a ``word_align`` file into word spans by utterance, in file order."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path}: file not found; it is made by stage 3 (mtbi.bin.align_words)")
    spans: dict[str, list[WordSpan]] = {}
    for lineno, fields in _lines(path):
        if len(fields) != 4:
            raise MtbiError(f"{path}:{lineno}: expected 'utt start end word'")
        utt, start, end, word = fields
        spans.setdefault(utt, []).append(WordSpan(utt, _float(start, path, lineno),
                                                  _float(end, path, lineno), word))
    return spans


class WordAlignIndex:
    """Random access to the word times of a ``word_align`` file: only each utterance's byte offset
    and line count are kept in memory; its lines are read when asked for (a file handle is opened
    lazily, one per process, as DataLoader workers need)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._index: dict[str, tuple[int, int]] = {}
        self._file = None
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                if line.strip():
                    utt = line.split(maxsplit=1)[0].decode()
                    start, count = self._index.get(utt, (offset, 0))
                    self._index[utt] = (start, count + 1)
                offset += len(line)

    def __len__(self) -> int:
        return len(self._index)

    def times(self, utt: str) -> list[tuple[float, float]] | None:
        """(start, end) seconds of each word of ``utt``; None when it has no alignment."""
        if utt not in self._index:
            return None
        if self._file is None:
            self._file = open(self.path, "rb")
        offset, count = self._index[utt]
        self._file.seek(offset)
        lines = [self._file.readline().split() for _ in range(count)]
        return [(float(fields[1]), float(fields[2])) for fields in lines]


def write_word_align(path: str | Path, spans: Mapping[str, Sequence[WordSpan]]) -> None:
    """Write ``word_align`` atomically: utterances sorted, words in the given order."""
    with atomic_write(path) as f:
        for utt in sorted(spans):
            f.writelines(f"{utt} {s.start:.3f} {s.end:.3f} {s.word}\n" for s in spans[utt])


def read_ctm(path: str | Path) -> dict[str, list[WordSpan]]:
    """Read a CTM file (``<recording> <channel> <start> <duration> <word> [<confidence>]``)
    into word spans by recording, each recording's words sorted by start time."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path}: CTM file not found")
    spans: dict[str, list[WordSpan]] = {}
    for lineno, fields in _lines(path):
        if len(fields) not in (5, 6):
            raise MtbiError(f"{path}:{lineno}: expected '<recording> <channel> <start> <duration> <word>'")
        rec, _, start, duration, word = fields[:5]
        begin = _float(start, path, lineno)
        spans.setdefault(rec, []).append(
            WordSpan(rec, _ms(begin), _ms(begin + _float(duration, path, lineno)), word))
    for words in spans.values():
        words.sort(key=lambda s: s.start)
    return spans


def write_ctm(path: str | Path, spans: Mapping[str, Sequence[WordSpan]]) -> None:
    """Write word spans as CTM (recording = utterance id, channel 1), sorted by utterance."""
    with atomic_write(path) as f:
        for utt in sorted(spans):
            f.writelines(f"{utt} 1 {s.start:.3f} {s.end - s.start:.3f} {s.word}\n" for s in spans[utt])


_TEXTGRID_FIELD = re.compile(r'^\s*(class|name|xmin|xmax|text)\s*=\s*(.*?)\s*$')
_TEXTGRID_ITEM = re.compile(r'^\s*(item|intervals|points)\s*\[\d+\]\s*:\s*$')


def read_textgrid(path: str | Path, tier: str = "words") -> list[WordSpan]:
    """The words of a long-format Praat TextGrid (as MFA writes) from the interval tier named
    ``tier`` (or ``<speaker> - <tier>``); empty, ``sil`` and ``sp`` intervals are left out.

    The spans' ``utt`` is the file's stem, which MFA takes from the audio file name.
    """
    path = Path(path)
    tiers = _textgrid_tiers(path)
    names = [name for name in tiers if name == tier] or [name for name in tiers if name.endswith(f" - {tier}")]
    if len(names) != 1:
        raise MtbiError(f"{path}: expected one interval tier named '{tier}', found tiers {list(tiers)}; "
                        "pick one with --textgrid_tier")
    return [WordSpan(path.stem, _ms(start), _ms(end), text) for start, end, text in tiers[names[0]]
            if text.strip().lower() not in NON_WORDS]


def _textgrid_tiers(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    """Interval tiers of a long-format TextGrid: name -> [(xmin, xmax, text)]."""
    if not path.is_file():
        raise MtbiError(f"{path}: TextGrid file not found")
    raw = path.read_bytes()
    try:  # Praat writes UTF-16 when a label is not ASCII, MFA writes UTF-8
        content = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MtbiError(f"{path}: not valid UTF-8 or UTF-16; re-save the TextGrid as UTF-8") from None
    if 'Object class = "TextGrid"' not in content or "item [" not in content:
        raise MtbiError(f"{path}: not a long-format TextGrid; save it in Praat's long text format "
                        "(MFA's default)")
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    name, interval_tier, current = "", False, {}
    for lineno, line in enumerate(content.splitlines(), 1):
        item = _TEXTGRID_ITEM.match(line)
        if item:
            if item.group(1) == "item":
                name, interval_tier = "", False
            current = {}
            continue
        field = _TEXTGRID_FIELD.match(line)
        if not field:
            continue
        key, value = field.groups()
        if key == "class":
            interval_tier = value == '"IntervalTier"'
        elif key == "name":
            name = _textgrid_string(value, path, lineno)
            if interval_tier:
                tiers.setdefault(name, [])
        elif key in ("xmin", "xmax"):
            current[key] = _float(value, path, lineno)
        elif interval_tier and name:
            tiers[name].append((current.get("xmin", 0.0), current.get("xmax", 0.0),
                                _textgrid_string(value, path, lineno)))
    return tiers


def _textgrid_string(value: str, path: Path, lineno: int) -> str:
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        raise MtbiError(f"{path}:{lineno}: expected a quoted string, got {value}")
    return value[1:-1].replace('""', '"')


def _normalize(word: str) -> str:
    """A word for comparison: case folded, punctuation dropped."""
    return "".join(c for c in word.casefold() if c.isalnum())


def match_transcript(utt: str, spans: Sequence[WordSpan], text: str) -> list[WordSpan]:
    """Check that the aligned words are the transcript's whitespace tokens (ignoring case and
    punctuation) and return the spans carrying the transcript's own tokens.

    Raises :class:`AlignmentError` when the words differ.
    """
    tokens = text.split()
    if len(spans) != len(tokens):
        raise AlignmentError(utt, "word count differs from the transcript",
                             f"{len(spans)} aligned words, {len(tokens)} in text")
    for i, (span, token) in enumerate(zip(spans, tokens)):
        if span.word != UNKNOWN_WORD and _normalize(span.word) != _normalize(token):
            raise AlignmentError(utt, "word differs from the transcript",
                                 f"word {i + 1} is '{span.word}', the transcript has '{token}'")
    return [WordSpan(utt, s.start, s.end, token) for s, token in zip(spans, tokens)]


def check_times(utt: str, spans: Sequence[WordSpan], duration: float | None = None) -> list[WordSpan]:
    """Check that every word has ``0 <= start < end``, words do not overlap and none ends past
    ``duration`` seconds; a last end at most :data:`MAX_CLIP` past it is clipped to it.

    Raises :class:`AlignmentError` naming the first bad word.
    """
    checked = list(spans)
    if duration is not None and checked and checked[-1].end > duration:
        over = checked[-1].end - duration
        if over > MAX_CLIP + 1e-9:
            raise AlignmentError(utt, "word ends past the audio end",
                                 f"'{checked[-1].word}' ends at {checked[-1].end:.3f} s, "
                                 f"the audio at {duration:.3f} s")
        checked = [replace(s, end=min(s.end, _ms(duration))) for s in checked]
    previous_end = 0.0
    for i, span in enumerate(checked):
        if not 0 <= span.start < span.end:
            raise AlignmentError(utt, "bad word times",
                                 f"word {i + 1} '{span.word}' has start {span.start:.3f}, end {span.end:.3f}")
        if span.start < previous_end:
            raise AlignmentError(utt, "words overlap",
                                 f"word {i + 1} '{span.word}' starts at {span.start:.3f} s, before the "
                                 f"previous word ends at {previous_end:.3f} s")
        previous_end = span.end
    return checked


def read_durations(feats_dir: str | Path) -> dict[str, float]:
    """Audio durations in seconds from ``<feats_dir>/utt2num_frames`` (:data:`FRAME_SHIFT` a frame)."""
    path = Path(feats_dir) / "utt2num_frames"
    if not path.is_file():
        raise MtbiError(f"{path}: file not found; it is made by stage 2 (features)")
    durations = {}
    for lineno, fields in _lines(path):
        if len(fields) != 2 or not fields[1].isdigit():
            raise MtbiError(f"{path}:{lineno}: expected 'utt num_frames'")
        durations[fields[0]] = int(fields[1]) * FRAME_SHIFT
    return durations


def find_alignment_files(paths: Sequence[str | Path], suffix: str) -> list[Path]:
    """The files in ``paths``; a directory stands for every ``*<suffix>`` file under it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
            if not found:
                raise MtbiError(f"{path}: no *{suffix} files in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise MtbiError(f"{path}: alignment file or directory not found")
    return files


def import_alignments(files: Sequence[Path], data_dir: str | Path, kind: str,
                      tier: str = "words") -> dict[str, list[WordSpan]]:
    """Word spans by utterance id of ``data_dir`` from CTM files or TextGrids (``kind`` ``ctm``
    or ``textgrid``). A recording (CTM) or file stem (TextGrid) may be the utterance id or the
    stem of its audio file in ``wav.scp``; recordings of other data dirs are ignored."""
    data_dir = Path(data_dir)
    texts = read_table(data_dir / "text", allow_empty_value=True)
    audio = read_table(data_dir / "wav.scp")
    stems = Counter(Path(a).stem for a in audio.values())
    names = {Path(a).stem: utt for utt, a in audio.items() if stems[Path(a).stem] == 1}
    names.update({utt: utt for utt in texts})

    spans: dict[str, list[WordSpan]] = {}
    origin: dict[str, Path] = {}
    ignored = 0
    for path in tqdm(files, desc=f"reading {kind} files", unit="file", mininterval=2.0,
                     disable=len(files) < 100):
        found = read_ctm(path) if kind == "ctm" else {path.stem: read_textgrid(path, tier)}
        for rec, words in found.items():
            utt = names.get(rec)
            if utt is None:
                ignored += 1
                continue
            if utt in spans:
                raise MtbiError(f"{path}: words of '{utt}' are also in {origin[utt]}; keep one of them")
            spans[utt] = [WordSpan(utt, w.start, w.end, w.word) for w in words]
            origin[utt] = path
    logger.info("%d %s files: words for %d of %d utterances of %s (%d recordings of other data dirs)",
                len(files), kind, len(spans), len(texts), data_dir, ignored)
    return spans


def finish_alignment(data_dir: str | Path, spans: Mapping[str, Sequence[WordSpan]],
                     durations: Mapping[str, float] | None = None,
                     skipped: Iterable[AlignmentError] = ()) -> dict[str, list[WordSpan]]:
    """Check ``spans`` against ``<data_dir>/text`` (and ``durations``), then write
    ``word_align`` and ``word_align.skipped`` atomically; return the spans written.

    ``skipped`` holds utterances the aligner already gave up on. Utterances of ``text`` with no
    spans, or without features when ``durations`` is given, are skipped with that reason.
    """
    data_dir = Path(data_dir)
    texts = read_table(data_dir / "text", allow_empty_value=True)
    skips = {err.utt: err for err in skipped}
    aligned: dict[str, list[WordSpan]] = {}
    for utt, text in texts.items():
        if utt in skips:
            continue
        try:
            if durations is not None and utt not in durations:
                raise AlignmentError(utt, "no features", "skipped in stage 2, see its skipped.txt")
            if utt not in spans:
                raise AlignmentError(utt, "no alignment", "the alignment source has no words for it")
            words = match_transcript(utt, spans[utt], text)
            aligned[utt] = check_times(utt, words, None if durations is None else durations[utt])
        except AlignmentError as err:
            skips[utt] = err
    write_word_align(data_dir / "word_align", aligned)
    write_skipped(data_dir / "word_align.skipped", skips.values())
    logger.info("%s: %d of %d utterances aligned, %d skipped (see %s)", data_dir / "word_align",
                len(aligned), len(texts), len(skips), data_dir / "word_align.skipped")
    for reason, count in Counter(err.reason for err in skips.values()).most_common():
        logger.info("  skipped %d: %s", count, reason)
    return aligned


def write_skipped(path: str | Path, skipped: Iterable[AlignmentError]) -> None:
    """Write a ``word_align.skipped`` file atomically: ``utt<TAB>reason<TAB>detail``, sorted by utterance."""
    with atomic_write(path) as f:
        f.writelines(f"{err.utt}\t{err.reason}\t{err.detail}\n" for err in sorted(skipped, key=lambda e: e.utt))


def read_skipped(path: str | Path) -> list[AlignmentError]:
    """Read a file of :func:`write_skipped`."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path}: file not found; it is made by stage 3 (mtbi.bin.align_words)")
    skipped = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise MtbiError(f"{path}:{lineno}: expected 'utt<TAB>reason<TAB>detail'; re-run stage 3")
        skipped.append(AlignmentError(*fields))
    return skipped


Aligner = Callable[[Mapping[str, str]], tuple[Mapping[str, Sequence[WordSpan]], list[AlignmentError]]]


def _shard_files(data_dir: Path, shard: int) -> tuple[Path, Path]:
    shards = data_dir / ALIGN_DIR / "shards"
    return shards / f"word_align.{shard}", shards / f"word_align.skipped.{shard}"


def align_shard(data_dir: str | Path, shard: int, num_shards: int, stamp: dict, inputs: Sequence[Path],
                align: Aligner) -> None:
    """Align every ``num_shards``-th utterance of ``<data_dir>/text`` (sorted), from ``shard``
    (1-based), with ``align(texts) -> (spans, skipped)`` into ``<data_dir>/align/shards/``
    ``word_align.<shard>`` and ``word_align.skipped.<shard>``. Skipped when already done with the
    same ``stamp`` (what the alignment is made from) after the last change of ``inputs``."""
    data_dir = Path(data_dir)
    files = _shard_files(data_dir, shard)
    step = shard_step(data_dir / ALIGN_DIR, shard, num_shards, stamp, inputs, outputs=files)
    if step.skip(f"{data_dir}: shard {shard}/{num_shards} already aligned"):
        return
    texts = read_table(data_dir / "text", allow_empty_value=True)
    spans, skipped = align({utt: texts[utt] for utt in shard_slice(sorted(texts), shard, num_shards)})
    write_word_align(files[0], spans)
    write_skipped(files[1], skipped)
    step.mark_done()
    logger.info("%s: shard %d/%d aligned %d utterances, skipped %d", data_dir, shard, num_shards,
                len(spans), len(skipped))


def merge_alignment_shards(data_dir: str | Path, num_shards: int, stamp: dict, inputs: Sequence[Path],
                           durations: Mapping[str, float] | None = None) -> None:
    """Merge the ``num_shards`` shards of :func:`align_shard` into ``<data_dir>/word_align`` and
    ``word_align.skipped`` (by :func:`finish_alignment`, as one process writes them). A shard
    that is missing, stale or made from another ``stamp`` is a one-line error naming stage 3."""
    data_dir = Path(data_dir)
    work = data_dir / ALIGN_DIR
    merged = merge_step(work, num_shards, "word alignment", 3, inputs,
                        outputs=[data_dir / "word_align", data_dir / "word_align.skipped"])
    for shard, made in enumerate(merged.stamp["shards"], 1):
        wanted = shard_step(work, shard, num_shards, stamp).stamp
        if made != wanted:
            keys = sorted(k for k in {*made, *wanted} if made.get(k) != wanted.get(k))
            raise MtbiError(f"{marker(work / 'shards', str(shard))}: word alignment shard {shard}/{num_shards} "
                            f"was made with another {', '.join(keys)}; re-run stage 3 with the same options")
    # The marker of word_align whichever way it is made: a one-process run's stamp never equals this one.
    step = replace(merged, path=marker(data_dir, "word_align"), stamp={**stamp, **merged.stamp})
    if step.skip(f"{data_dir}: {num_shards} alignment shards already merged"):
        return
    spans: dict[str, Sequence[WordSpan]] = {}
    skipped: list[AlignmentError] = []
    for shard in range(1, num_shards + 1):
        span_file, skipped_file = _shard_files(data_dir, shard)
        spans.update(read_word_align(span_file))
        skipped += read_skipped(skipped_file)
    finish_alignment(data_dir, spans, durations, skipped)
    step.mark_done()


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    """The whitespace-split fields of each non-empty line of ``path``, with its line number."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise MtbiError(f"{path}:{lineno}: not valid UTF-8; re-encode the file as UTF-8") from None
            if fields:
                yield lineno, fields


def _float(value: str, path: Path, lineno: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise MtbiError(f"{path}:{lineno}: '{value}' is not a number") from None
