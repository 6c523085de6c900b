"""What a corpus reader returns, and how stage 1 turns it into a checked data dir."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mtbi.data.audio import AudioError, probe_audio
from mtbi.data.datadir import ID_PATTERN, Utterance, write_data_dir
from mtbi.io import atomic_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """An utterance (or file) left out: a short ``reason`` to count, a ``detail`` to act on."""

    item: str
    reason: str
    detail: str


@dataclass
class CorpusListing:
    """Utterances a reader found, plus those it had to skip."""

    utterances: list[Utterance] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
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


def check_audio_headers(listing: CorpusListing, allow_upsample: bool = False) -> CorpusListing:
    """Keep the utterances whose audio header is readable and usable; skip the rest."""
    checked = CorpusListing(skipped=list(listing.skipped))
    for utt in tqdm(listing.utterances, desc="checking audio", unit="utt", mininterval=2.0):
        try:
            probe_audio(utt.audio, allow_upsample=allow_upsample)
        except AudioError as err:
            checked.skip(utt.utt_id, err.reason, str(err))
            continue
        checked.add(utt)
    return checked


def write_listing(listing: CorpusListing, out_dir: str | Path) -> None:
    """Write the data dir and ``skipped.txt`` (``item<TAB>reason<TAB>detail``) atomically."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_data_dir(tmp, listing.utterances)
        with open(tmp / "skipped.txt", "w", encoding="utf-8") as f:
            for s in listing.skipped:
                f.write(f"{s.item}\t{s.reason}\t{s.detail}\n")
    reasons = Counter(s.reason for s in listing.skipped)
    speakers = len({u.speaker for u in listing.utterances})
    logger.info("%s: %d utterances from %d speakers, %d skipped (see %s)", out_dir,
                len(listing.utterances), speakers, len(listing.skipped), out_dir / "skipped.txt")
    for reason, count in reasons.most_common():
        logger.info("  skipped %d: %s", count, reason)
