"""LibriSpeech reader: ``<root>/<part>/<reader>/<chapter>/<utt>.flac`` + ``<reader>-<chapter>.trans.txt``,
and word timings from ``<root>/alignments/<part>.ctm`` (recording = utterance id) when present."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mtbi.data.corpus import CorpusListing
from mtbi.data.datadir import Utterance
from mtbi.errors import MtbiError


def read_librispeech(root: str | Path, parts: Sequence[str]) -> CorpusListing:
    """List the utterances of ``parts`` (e.g. ``["train-clean-100"]``) under ``root``.

    ``root`` is the ``LibriSpeech`` directory that holds the part directories. The speaker
    of an utterance is its reader id (the first field of the id). Flac files without a
    transcript line, transcript lines without audio, undecodable or empty lines are skipped.
    Word timings come from ``<root>/alignments/<part>.ctm`` when it exists (the mini corpus
    writes it; forced-aligner output converted to CTM can be put there too).
    """
    root = Path(root)
    listing = CorpusListing()
    for part in parts:
        part_dir = root / part
        if not part_dir.is_dir():
            raise MtbiError(f"{part_dir}: LibriSpeech part not found; check LIBRISPEECH in db.sh "
                            "and the part names")
        transcripts = sorted(part_dir.glob("*/*/*.trans.txt"))
        if not transcripts:
            raise MtbiError(f"{part_dir}: no */*/*.trans.txt files; is this a LibriSpeech part?")
        for trans in transcripts:
            _read_chapter(trans, listing)
        listing.add_word_times(root / "alignments" / f"{part}.ctm")
    return listing


def _read_chapter(trans: Path, listing: CorpusListing) -> None:
    chapter_dir = trans.parent
    flacs = {p.stem: p for p in chapter_dir.glob("*.flac")}
    listed: set[str] = set()
    with open(trans, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                utt_id = raw.split(maxsplit=1)[0].decode("utf-8", errors="replace")
                flacs.pop(utt_id, None)
                listing.skip(utt_id, "non-UTF-8 transcript", f"{trans}:{lineno}")
                continue
            if not line:
                continue
            utt_id, _, text = line.partition(" ")
            audio = flacs.pop(utt_id, None)
            if audio is None and utt_id in listed:
                listing.skip(utt_id, "duplicate id", f"{trans}:{lineno}")
                continue
            if audio is None:
                listing.skip(utt_id, "audio file missing", str(chapter_dir / f"{utt_id}.flac"))
                continue
            listed.add(utt_id)
            speaker = utt_id.split("-")[0]
            listing.add(Utterance(utt_id, speaker, str(audio.resolve()), " ".join(text.split())))
    for utt_id, audio in sorted(flacs.items()):
        listing.skip(utt_id, "no transcript line", f"{audio} has no line in {trans}")
