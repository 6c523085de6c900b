"""Data dirs made elsewhere, imported into mtbi's conventions: a Kaldi or ESPnet data dir, or a
lhotse manifest through lhotse's own Kaldi export.

:func:`import_kaldi_dir` copies ``wav.scp``, ``text``, ``utt2spk`` and ``segments`` sorted in
C-locale order and writes ``spk2utt`` from ``utt2spk``. It fixes, and says so in the log:

- an utterance id not prefixed by its speaker id is renamed ``<spk>-<utt>`` in every file;
  ``utt_map`` lists ``new old`` for each renamed utterance;
- an utterance missing from ``text``, ``utt2spk`` or ``wav.scp``/``segments``, or with an empty
  transcript, is left out and counted (as Kaldi's ``fix_data_dir.sh`` does); so are recordings
  that no kept segment uses;
- other files (``utt2dur``, ``reco2file_and_channel``, ``feats.scp``, ...) are ignored.

It refuses, with a one-line :class:`MtbiError` naming the file: a missing ``wav.scp``, ``text`` or
``utt2spk``, a malformed or duplicate line, an id outside :data:`ID_PATTERN`, a segment whose
recording is not in ``wav.scp``, and renamed ids that clash.

:func:`import_lhotse` exports supervisions and recordings with ``lhotse.kaldi.export_to_kaldi``
and imports the result as above. A supervision without a speaker takes its recording id as
speaker; one without text (None or blank) is left out and counted. A multi-channel recording
becomes one recording per channel (``<rec>_<channel>``) and a supervision one utterance per channel
it is on (``<sup>-<channel>``), as lhotse exports them.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from mtbi.data.datadir import ID_PATTERN, read_table, write_spk2utt, write_table
from mtbi.data.wav_scp import entry_kind, read_segments
from mtbi.errors import MtbiError

if TYPE_CHECKING:
    from lhotse import RecordingSet, SupervisionSet

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp", "text", "utt2spk")
SOURCE_FILES = REQUIRED_FILES + ("segments",)
# Files an import writes only sometimes: one left by an earlier stage 1 would no longer match.
OPTIONAL_OUTPUTS = ("segments", "utt_map", "ctm")


@dataclass(frozen=True)
class KaldiTables:
    """The tables of a source data dir; ``segments`` is None when it has none."""

    wav_scp: dict[str, str]
    text: dict[str, str]
    utt2spk: dict[str, str]
    segments: dict[str, str] | None

    def by_file(self) -> dict[str, dict[str, str]]:
        """The tables by file name, ``segments`` only when there is one."""
        tables = {"wav.scp": self.wav_scp, "text": self.text, "utt2spk": self.utt2spk, "segments": self.segments}
        return {name: table for name, table in tables.items() if table is not None}

    @property
    def audio_file(self) -> str:
        """The file that maps utterances to audio: ``segments`` or ``wav.scp``."""
        return "wav.scp" if self.segments is None else "segments"

    @property
    def audio(self) -> dict[str, str]:
        """The table of :attr:`audio_file`."""
        return self.wav_scp if self.segments is None else self.segments


# -- Kaldi / ESPnet data dirs --------------------------------------------------------------------
def import_kaldi_dir(src: str | Path, out_dir: str | Path) -> int:
    """Import the data dir ``src`` into ``out_dir``; return the number of utterances written."""
    src, out_dir = Path(src), Path(out_dir)
    if out_dir.resolve() == src.resolve():
        raise MtbiError(f"{src}: importing a data dir into itself; give another output dir")
    tables = read_source(src)
    names = prefixed_names(src, tables.utt2spk, usable_utts(src, tables))
    write_imported(out_dir, tables, names)
    speakers = len({tables.utt2spk[utt] for utt in names})
    logger.info("%s: %d utterances of %d speakers imported from %s", out_dir, len(names), speakers, src)
    return len(names)


def read_source(src: Path) -> KaldiTables:
    """Read and check the tables of ``src``; log the files that are not imported."""
    if not src.is_dir():
        raise MtbiError(f"{src}: data directory not found")
    for name in REQUIRED_FILES:
        if not (src / name).is_file():
            raise MtbiError(f"{src / name}: required file missing (a data dir needs {', '.join(REQUIRED_FILES)})")
    tables = KaldiTables(wav_scp=read_table(src / "wav.scp"),
                         text=read_table(src / "text", allow_empty_value=True),
                         utt2spk=read_table(src / "utt2spk"),
                         segments=read_table(src / "segments") if (src / "segments").is_file() else None)
    for name, table in tables.by_file().items():
        check_ids(src / name, table)
    check_ids(src / "utt2spk", tables.utt2spk.values())
    if tables.segments is not None:
        check_recordings(src, tables.wav_scp)
    ignored = sorted(p.name for p in src.iterdir() if p.name not in SOURCE_FILES and not p.name.startswith("."))
    if ignored:
        logger.info("%s: not imported: %s (spk2utt is written from utt2spk; mtbi uses no other file)",
                    src, ", ".join(ignored))
    return tables


def check_ids(path: Path, ids: Iterable[str]) -> None:
    """Refuse the first of ``ids`` outside :data:`ID_PATTERN`; the ``n``-th id is on line ``n``."""
    for lineno, key in enumerate(ids, 1):
        if not ID_PATTERN.match(key):
            raise MtbiError(f"{path}:{lineno}: id '{key}' has characters outside [A-Za-z0-9_.-] or does not "
                            "start with a letter or digit; rename it in the source")


def check_recordings(src: Path, wav_scp: dict[str, str]) -> None:
    """Refuse a malformed line of ``segments`` or a segment whose recording is not in ``wav.scp``."""
    for lineno, (utt, segment) in enumerate(read_segments(src / "segments").items(), 1):
        if segment.recording not in wav_scp:
            raise MtbiError(f"{src / 'segments'}:{lineno}: recording '{segment.recording}' of segment '{utt}' "
                            f"is not in {src / 'wav.scp'}")


def usable_utts(src: Path, tables: KaldiTables) -> set[str]:
    """The utterances in ``text``, ``utt2spk`` and :attr:`~KaldiTables.audio_file` with a transcript;
    the others are left out with a warning naming the file that lacks them."""
    files = {"utt2spk": tables.utt2spk, "text": tables.text, tables.audio_file: tables.audio}
    every = set().union(*files.values())
    kept = set(every)
    for name, table in files.items():
        missing = every - set(table)
        if missing:
            logger.warning("%s: %d utterances of the other files are missing here (first: '%s'); left out",
                           src / name, len(missing), min(missing))
        kept &= set(table)
    empty = {utt for utt in kept if not tables.text[utt].strip()}
    if empty:
        logger.warning("%s: %d empty transcripts (first: '%s'); left out", src / "text", len(empty), min(empty))
    kept -= empty
    if not kept:
        raise MtbiError(f"{src}: no utterance has a transcript in text, a speaker in utt2spk and audio in "
                        f"{tables.audio_file}")
    return kept


def prefixed_names(src: Path, utt2spk: dict[str, str], utts: set[str]) -> dict[str, str]:
    """``{old: new}`` id of each of ``utts``: ``<spk>-<utt>`` for those not prefixed by their speaker."""
    names = {utt: utt if utt.startswith(spk) else f"{spk}-{utt}" for utt, spk in utt2spk.items() if utt in utts}
    twice = [new for new, count in Counter(names.values()).items() if count > 1]
    if twice:
        raise MtbiError(f"{src / 'utt2spk'}: prefixing utterance ids by their speaker ids gives '{min(twice)}' "
                        "twice; make the ids unique in the source")
    renamed = sum(old != new for old, new in names.items())
    if renamed:
        logger.info("%s: %d of %d utterance ids are not prefixed by their speaker id: renamed <spk>-<utt> in "
                    "every file (utt_map lists 'new old')", src, renamed, len(names))
    return names


def write_imported(out_dir: Path, tables: KaldiTables, names: dict[str, str]) -> None:
    """Write the utterances ``names`` (``{old: new}`` ids) of ``tables`` into ``out_dir``."""
    write_table(out_dir / "text", ((new, tables.text[old]) for old, new in names.items()))
    write_table(out_dir / "utt2spk", ((new, tables.utt2spk[old]) for old, new in names.items()))
    if tables.segments is None:
        wav_scp = {new: tables.wav_scp[old] for old, new in names.items()}
    else:
        segments = {new: tables.segments[old] for old, new in names.items()}
        write_table(out_dir / "segments", segments)
        used = {value.split()[0] for value in segments.values()}
        wav_scp = {rec: entry for rec, entry in tables.wav_scp.items() if rec in used}
        if len(wav_scp) < len(tables.wav_scp):
            logger.info("%s: %d recordings of wav.scp have no kept segment; left out", out_dir,
                        len(tables.wav_scp) - len(wav_scp))
    write_table(out_dir / "wav.scp", wav_scp)
    warn_missing_audio(out_dir / "wav.scp", wav_scp)
    write_spk2utt(out_dir, {new: tables.utt2spk[old] for old, new in names.items()})
    renamed = {new: old for old, new in names.items() if new != old}
    if renamed:
        write_table(out_dir / "utt_map", renamed)
    written = {"segments": tables.segments is not None, "utt_map": bool(renamed), "ctm": False}
    for name in OPTIONAL_OUTPUTS:
        if not written[name]:
            (out_dir / name).unlink(missing_ok=True)


def warn_missing_audio(path: Path, wav_scp: dict[str, str]) -> None:
    """Warn about ``wav.scp`` entries naming files that do not exist (commands and arks are not run)."""
    missing = [entry for entry in wav_scp.values() if entry_kind(entry) == "file" and not Path(entry).is_file()]
    if missing:
        logger.warning("%s: %d of %d audio files do not exist (first: '%s'); a relative path is read from the "
                       "recipe dir", path, len(missing), len(wav_scp), missing[0])


# -- lhotse manifests ----------------------------------------------------------------------------
def import_lhotse(out_dir: str | Path, cuts: str | Path | None = None, recordings: str | Path | None = None,
                  supervisions: str | Path | None = None) -> int:
    """Import a lhotse ``cuts`` manifest, or ``recordings`` with ``supervisions``, into ``out_dir``
    through lhotse's Kaldi export; return the number of utterances written."""
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.kaldi import export_to_kaldi

    for manifest in (cuts, recordings, supervisions):
        if manifest is not None and not Path(manifest).is_file():
            raise MtbiError(f"{manifest}: lhotse manifest not found")
    if cuts is not None:
        recording_set, supervision_set, _ = CutSet.from_file(cuts).decompose()
        recordings = supervisions = cuts  # what errors name
    elif recordings is not None and supervisions is not None:
        recording_set, supervision_set = RecordingSet.from_file(recordings), SupervisionSet.from_file(supervisions)
    else:
        raise MtbiError("give a lhotse cuts manifest, or a recordings and a supervisions manifest")
    check_lhotse_recordings(Path(recordings), recording_set)
    supervision_set = usable_supervisions(Path(supervisions), supervision_set, set(recording_set.ids))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.lhotse_export.") as exported:
        try:
            # Not prefix_spk_id: the import prefixes only the ids that need it and lists them in utt_map.
            export_to_kaldi(recording_set, supervision_set, exported, prefix_spk_id=False)
        except ValueError as err:
            raise MtbiError(f"{supervisions}: lhotse's Kaldi export failed: {err}") from None
        use_file_paths(Path(exported) / "wav.scp", recording_set)
        return import_kaldi_dir(exported, out_dir)


def check_lhotse_recordings(manifest: Path, recordings: RecordingSet) -> None:
    """Refuse recordings a data dir cannot express: ids outside :data:`ID_PATTERN`, audio that is
    not in a file or made by a command (url, memory), transforms other than resampling (speed or
    volume perturbation: lhotse's export would drop them silently)."""
    from lhotse.augmentation import Resample

    for rec in recordings:
        check_lhotse_id(manifest, "recording", rec.id)
        kinds = sorted({source.type for source in rec.sources} - {"file", "command"})
        if kinds:
            raise MtbiError(f"{manifest}: recording '{rec.id}' has {kinds[0]} audio, which a data dir cannot "
                            "point at; save its audio to files first")
        changed = [type(t).__name__ for t in rec.transforms or () if not isinstance(t, Resample)]
        if changed:
            raise MtbiError(f"{manifest}: recording '{rec.id}' is transformed ({', '.join(changed)}), which a "
                            "data dir cannot express; import the manifest before perturbation")


def usable_supervisions(manifest: Path, supervisions: SupervisionSet, recording_ids: set[str]) -> SupervisionSet:
    """The supervisions with text, on one line, each with a speaker (its recording id when it has
    none); those without text are left out and counted."""
    from lhotse import SupervisionSet
    from lhotse.utils import fastcopy

    kept, seen, untranscribed, anonymous = [], set(), 0, 0
    for sup in supervisions:
        check_lhotse_id(manifest, "supervision", sup.id)
        if sup.id in seen:
            raise MtbiError(f"{manifest}: duplicate supervision id '{sup.id}'")
        seen.add(sup.id)
        if sup.recording_id not in recording_ids:
            raise MtbiError(f"{manifest}: supervision '{sup.id}' is on recording '{sup.recording_id}', whose "
                            "audio is not in the manifests")
        if not (sup.text or "").strip():
            untranscribed += 1
            continue
        anonymous += sup.speaker is None
        speaker = sup.recording_id if sup.speaker is None else sup.speaker
        check_lhotse_id(manifest, "speaker", speaker)
        kept.append(fastcopy(sup, speaker=speaker, text=" ".join(sup.text.split())))
    if untranscribed:
        logger.warning("%s: %d supervisions without text; left out", manifest, untranscribed)
    if anonymous:
        logger.info("%s: %d supervisions without a speaker take their recording id as speaker", manifest, anonymous)
    if not kept:
        raise MtbiError(f"{manifest}: no supervision has text")
    return SupervisionSet.from_segments(kept)


def check_lhotse_id(manifest: Path, what: str, key: str) -> None:
    """Refuse an id of a manifest outside :data:`ID_PATTERN`."""
    if not ID_PATTERN.match(key):
        raise MtbiError(f"{manifest}: {what} id '{key}' has characters outside [A-Za-z0-9_.-] or does not start "
                        "with a letter or digit; rename it in the manifest")


def use_file_paths(wav_scp: Path, recordings: RecordingSet) -> None:
    """Point the ``wav.scp`` entries of single-channel audio files at the files themselves.

    lhotse writes a path only for a WAV file and an ``ffmpeg ... |`` command for the others;
    mtbi reads FLAC, MP3 and OGG with soundfile and resamples itself, so no ffmpeg is needed.
    SPHERE files keep lhotse's ``sph2pipe`` command (libsndfile cannot read shorten-compressed
    ones), and channels of multi-channel files keep theirs, which need ffmpeg on PATH.
    """
    table = read_table(wav_scp)
    one_channel = all(rec.num_channels == 1 for rec in recordings)
    for rec in recordings:
        for source in rec.sources:
            if source.type == "file" and len(source.channels) == 1 and Path(source.source).suffix != ".sph":
                table[rec.id if one_channel else f"{rec.id}_{source.channels[0]}"] = source.source
    write_table(wav_scp, table)
    commands = sum("ffmpeg" in entry for entry in table.values())
    if commands:
        logger.warning("lhotse's export decodes %d recordings with ffmpeg (channels of multi-channel files, "
                       "SPHERE files): stage 2 needs ffmpeg on PATH", commands)
