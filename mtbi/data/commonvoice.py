"""Common Voice reader: ``<root>/{validated,dev,test,...}.tsv`` (columns by header) + ``clips/*.mp3``,
and word timings from ``<root>/alignments/<split>.ctm`` (recording = clip stem) when present."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

from mtbi.data.corpus import CorpusListing
from mtbi.data.datadir import Utterance
from mtbi.errors import MtbiError

REQUIRED_COLUMNS = ("client_id", "path", "sentence")
EVAL_SPLITS = ("dev", "test")


def read_commonvoice(root: str | Path, split: str) -> CorpusListing:
    """List the utterances of ``split`` under a Common Voice language dir ``root``.

    ``split`` is a tsv name (``dev``, ``test``, ``validated``, ``other``...) or ``train``,
    which is ``validated`` minus the clips of ``dev`` and ``test`` (as ESPnet's recipe does),
    so that the larger validated set is used. Utterance ids are ``<client_id>-<clip stem>``.
    Word timings come from ``<root>/alignments/<split>.ctm`` when it exists.
    """
    root = Path(root)
    listing = CorpusListing()
    if split == "train":
        held_out = {row["path"] for name in EVAL_SPLITS
                    for row in _rows(root / f"{name}.tsv", CorpusListing())}
        rows = (r for r in _rows(root / "validated.tsv", listing) if r["path"] not in held_out)
    else:
        rows = _rows(root / f"{split}.tsv", listing)
    utt_ids: dict[str, str] = {}
    for row in rows:
        clip = root / "clips" / row["path"]
        utt_id = f"{row['client_id']}-{Path(row['path']).stem}"
        utt_ids[clip.stem] = utt_id
        listing.add(Utterance(utt_id, row["client_id"], str(clip.resolve()), " ".join(row["sentence"].split())))
    listing.add_word_times(root / "alignments" / f"{split}.ctm", utt_ids)
    return listing


def _rows(tsv: Path, listing: CorpusListing) -> Iterator[dict[str, str]]:
    """Yield the rows of a Common Voice tsv as dicts keyed by header name; skip bad lines."""
    if not tsv.is_file():
        raise MtbiError(f"{tsv}: Common Voice tsv not found; check COMMONVOICE in db.sh "
                        "(it must be the language dir holding validated.tsv and clips/)")
    with open(tsv, "rb") as f:
        header = next(iter(f), b"").decode("utf-8", errors="replace").rstrip("\r\n").split("\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise MtbiError(f"{tsv}: missing column(s) {', '.join(missing)}; header is {header}")
        for lineno, raw in enumerate(f, 2):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                listing.skip(f"{tsv}:{lineno}", "non-UTF-8 transcript", str(tsv))
                continue
            fields = next(csv.reader(io.StringIO(line), delimiter="\t", quoting=csv.QUOTE_NONE))
            if len(fields) < len(header):
                listing.skip(f"{tsv}:{lineno}", "short tsv row", f"{len(fields)} of {len(header)} columns")
                continue
            yield dict(zip(header, fields))
