"""What a corpus reader returns, and how stage 1 turns it into a checked data dir."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mtbi.data.audio import AudioError, probe_audio, resampled_length
from mtbi.data.datadir import ID_PATTERN, Utterance, write_data_dir, write_table
from mtbi.data.word_align import WordSpan, read_ctm, write_ctm
from mtbi.stage import atomic_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """An utterance (or file) left out: a short ``reason`` to count, a ``detail`` to act on."""

    item: str
    reason: str
    detail: str


@dataclass
class CorpusListing:
    """Utterances a reader found, plus those it had to skip, plus word timings the corpus
    provides (by utterance id; written to the data dir's optional ``ctm``)."""

    utterances: list[Utterance] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    word_times: dict[str, list[WordSpan]] = field(default_factory=dict)
    num_samples: dict[str, int] = field(default_factory=dict)  # at 16 kHz, from the headers checked
    _ids: set[str] = field(default_factory=set, init=False, repr=False)

    def add(self, utt: Utterance) -> None:
        """Add ``utt`` unless its id is unsafe, already taken or its text is empty."""
        if not ID_PATTERN.match(utt.utt_id):
            self.skip(utt.utt_id, "unsafe id", "id has characters outside [A-Za-z0-9_.-]")
        elif not utt.text.strip():
            self.skip(utt.utt_id, "empty transcript", utt.audio)
        elif utt.utt_id in self._ids:
            self.skip(utt.utt_id, "duplicate id", utt.audio)
        else:
            self._ids.add(utt.utt_id)
            self.utterances.append(utt)

    def skip(self, item: str, reason: str, detail: str) -> None:
        self.skipped.append(Skipped(item, reason, detail))

    def add_word_times(self, ctm: Path, utt_ids: dict[str, str] | None = None) -> None:
        """Read the CTM file ``ctm`` if it exists; ``utt_ids`` maps its recordings to utterance
        ids (default: the recording is the utterance id)."""
        if not ctm.is_file():
            return
        found = 0
        for rec, spans in read_ctm(ctm).items():
            utt = rec if utt_ids is None else utt_ids.get(rec)
            if utt is not None:
                self.word_times[utt] = [WordSpan(utt, s.start, s.end, s.word) for s in spans]
                found += 1
        logger.info("%s: word timings for %d recordings", ctm, found)


def check_audio_headers(listing: CorpusListing, allow_upsample: bool = False) -> CorpusListing:
    """Keep the utterances whose audio header is readable and usable, with their length at 16 kHz
    where the header tells it (MP3 headers may not); skip the rest."""
    checked = CorpusListing(skipped=list(listing.skipped), word_times=listing.word_times)
    for utt in tqdm(listing.utterances, desc="checking audio", unit="utt", mininterval=2.0):
        try:
            info = probe_audio(utt.audio, allow_upsample=allow_upsample)
        except AudioError as err:
            checked.skip(utt.utt_id, err.reason, str(err))
            continue
        checked.add(utt)
        if info.frames:
            checked.num_samples[utt.utt_id] = resampled_length(info.frames, info.sample_rate)
    return checked


def write_listing(listing: CorpusListing, out_dir: str | Path) -> None:
    """Write the data dir, ``skipped.txt`` (``item<TAB>reason<TAB>detail``), ``utt2num_samples``
    (16 kHz samples, from the headers: stage 2 ``raw`` need not open the files again) and, when
    the corpus has word timings, ``ctm`` (those of the kept utterances) atomically."""
    out_dir = Path(out_dir)
    timed = {u.utt_id: listing.word_times[u.utt_id] for u in listing.utterances
             if u.utt_id in listing.word_times}
    with atomic_dir(out_dir) as tmp:
        write_data_dir(tmp, listing.utterances)
        kept = {u.utt_id for u in listing.utterances}
        write_table(tmp / "utt2num_samples", {u: str(n) for u, n in listing.num_samples.items() if u in kept})
        if listing.word_times:
            write_ctm(tmp / "ctm", timed)
        with open(tmp / "skipped.txt", "w", encoding="utf-8") as f:
            for s in listing.skipped:
                f.write(f"{s.item}\t{s.reason}\t{s.detail}\n")
    reasons = Counter(s.reason for s in listing.skipped)
    speakers = len({u.speaker for u in listing.utterances})
    logger.info("%s: %d utterances from %d speakers, %d skipped (see %s)", out_dir,
                len(listing.utterances), speakers, len(listing.skipped), out_dir / "skipped.txt")
    for reason, count in reasons.most_common():
        logger.info("  skipped %d: %s", count, reason)
    if listing.word_times:
        logger.info("%s: word timings for %d of %d utterances", out_dir / "ctm", len(timed),
                    len(listing.utterances))
