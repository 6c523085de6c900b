"""Kaldi-style data directories: read, write and validate.

A data dir holds ``wav.scp``, ``text``, ``utt2spk`` and ``spk2utt`` (and optionally
``segments``), each sorted by key in C-locale order with unique keys. Utterance ids are
prefixed by their speaker id so that sorting by utterance also groups speakers. An optional
``ctm`` holds word timings the corpus provides (``utt 1 start duration word``, one word a
line, grouped by utterance in sorted order), which stage 3 turns into ``word_align``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from mtbi.errors import MtbiError
from mtbi.stage import atomic_write

REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
# Ids travel through shell command lines and file names: keep them to a safe alphabet.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus, as stage 1 writes it."""

    utt_id: str
    speaker: str
    audio: str
    text: str


@dataclass(frozen=True)
class Problem:
    """One validation finding, printed as ``file:line: message``."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


def read_table(path: str | Path, *, allow_empty_value: bool = False) -> dict[str, str]:
    """Read a ``key value...`` file into an ordered dict.

    Raises :class:`MtbiError` naming the file and line for a missing file, a line that is
    not UTF-8, a line without a value, or a duplicate key.
    """
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path}: file not found")
    table: dict[str, str] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError:
                raise MtbiError(f"{path}:{lineno}: not valid UTF-8; re-encode the file as UTF-8") from None
            key, _, value = line.strip().partition(" ")
            value = value.strip()
            if not key:
                raise MtbiError(f"{path}:{lineno}: empty line")
            if not value and not allow_empty_value:
                raise MtbiError(f"{path}:{lineno}: '{key}' has no value")
            if key in table:
                raise MtbiError(f"{path}:{lineno}: duplicate key '{key}'")
            table[key] = value
    return table


def write_table(path: str | Path, table: dict[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write ``key value`` lines sorted by key (C-locale order), atomically."""
    items = table.items() if isinstance(table, dict) else table
    with atomic_write(path) as f:
        for key, value in sorted(items):
            f.write(f"{key} {value}\n")


def write_data_dir(out_dir: str | Path, utterances: Sequence[Utterance]) -> None:
    """Write ``wav.scp``, ``text``, ``utt2spk`` and ``spk2utt`` for ``utterances``."""
    out_dir = Path(out_dir)
    seen: set[str] = set()
    for utt in utterances:
        if utt.utt_id in seen:
            raise MtbiError(f"{out_dir}: duplicate utterance id '{utt.utt_id}'")
        seen.add(utt.utt_id)
    write_table(out_dir / "wav.scp", ((u.utt_id, u.audio) for u in utterances))
    write_table(out_dir / "text", ((u.utt_id, u.text) for u in utterances))
    write_table(out_dir / "utt2spk", ((u.utt_id, u.speaker) for u in utterances))
    write_spk2utt(out_dir, {u.utt_id: u.speaker for u in utterances})


def write_spk2utt(out_dir: str | Path, utt2spk: dict[str, str]) -> None:
    """Write ``spk2utt`` of ``utt2spk``, each speaker's utterances sorted."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_table(Path(out_dir) / "spk2utt", ((s, " ".join(u)) for s, u in spk2utt.items()))


def subset_data_dir(src: str | Path, dst: str | Path, keep: set[str]) -> None:
    """Copy the data dir ``src`` to ``dst`` keeping only the utterances in ``keep``."""
    src, dst = Path(src), Path(dst)
    for name in ("text", "utt2spk"):
        table = read_table(src / name, allow_empty_value=name == "text")
        write_table(dst / name, {k: v for k, v in table.items() if k in keep})
    recordings = keep
    if (src / "segments").is_file():  # wav.scp holds recordings: keep those of the kept segments
        segments = {k: v for k, v in read_table(src / "segments").items() if k in keep}
        write_table(dst / "segments", segments)
        recordings = {value.split()[0] for value in segments.values()}
    else:
        (dst / "segments").unlink(missing_ok=True)
    write_table(dst / "wav.scp", {k: v for k, v in read_table(src / "wav.scp").items() if k in recordings})
    if (src / "ctm").is_file():
        with open(src / "ctm", encoding="utf-8") as f, atomic_write(dst / "ctm") as out:
            out.writelines(line for line in f if (line.split(maxsplit=1) or [""])[0] in keep)
    else:
        (dst / "ctm").unlink(missing_ok=True)
    write_spk2utt(dst, read_table(dst / "utt2spk"))


def draw_utts(utts: Iterable[str], max_utts: int = 0, seed: int = 0) -> list[str]:
    """``max_utts`` of ``utts`` drawn with ``seed`` (all of them when 0 or more than there are),
    sorted. The same seed draws the same utterances for stage 5 and the benchmark."""
    utts = sorted(utts)
    return sorted(random.Random(seed).sample(utts, max_utts)) if 0 < max_utts < len(utts) else utts


def utt_ids(data_dir: str | Path) -> list[str]:
    """The sorted utterance ids of a data dir (keys of ``text``)."""
    return sorted(read_table(Path(data_dir) / "text", allow_empty_value=True))


def validate_data_dir(data_dir: str | Path) -> list[Problem]:
    """Check a data dir against the Kaldi conventions; return every problem found."""
    data_dir = Path(data_dir)
    problems: list[Problem] = []
    if not data_dir.is_dir():
        return [Problem(str(data_dir), 0, "data directory not found")]
    tables: dict[str, dict[str, str]] = {}
    for name in REQUIRED_FILES + ("segments",):
        path = data_dir / name
        if not path.exists():
            if name != "segments":
                problems.append(Problem(str(path), 0, "required file missing"))
            continue
        table, found = _scan_table(path)
        problems += found
        tables[name] = table

    utt2spk = tables.get("utt2spk", {})
    for utt, spk in utt2spk.items():
        if not utt.startswith(spk):
            problems.append(Problem(str(data_dir / "utt2spk"), 0,
                                    f"utterance id '{utt}' is not prefixed by its speaker id '{spk}'"))
    for name in ("text",) + (("segments",) if "segments" in tables else ("wav.scp",)):
        if name not in tables or "utt2spk" not in tables:
            continue
        for utt in sorted(set(utt2spk) - set(tables[name])):
            problems.append(Problem(str(data_dir / name), 0, f"utterance '{utt}' (in utt2spk) is missing"))
        for utt in sorted(set(tables[name]) - set(utt2spk)):
            problems.append(Problem(str(data_dir / name), 0, f"utterance '{utt}' is not in utt2spk"))
    if "text" in tables:
        for lineno, (utt, text) in enumerate(tables["text"].items(), 1):
            if not text.strip():
                problems.append(Problem(str(data_dir / "text"), lineno, f"empty transcript for '{utt}'"))
    if "spk2utt" in tables and "utt2spk" in tables:
        expected: dict[str, set[str]] = {}
        for utt, spk in utt2spk.items():
            expected.setdefault(spk, set()).add(utt)
        actual = {spk: set(v.split()) for spk, v in tables["spk2utt"].items()}
        if expected != actual:
            problems.append(Problem(str(data_dir / "spk2utt"), 0,
                                    "does not match utt2spk; regenerate it from utt2spk"))
    if "segments" in tables and "wav.scp" in tables:
        for lineno, (utt, value) in enumerate(tables["segments"].items(), 1):
            fields = value.split()
            seg_file = str(data_dir / "segments")
            if len(fields) != 3:
                problems.append(Problem(seg_file, lineno, "expected 'utt recording start end'"))
                continue
            rec, start, end = fields
            if rec not in tables["wav.scp"]:
                problems.append(Problem(seg_file, lineno, f"recording '{rec}' is not in wav.scp"))
            try:
                if not 0 <= float(start) < float(end):
                    problems.append(Problem(seg_file, lineno, f"bad times {start} {end} for '{utt}'"))
            except ValueError:
                problems.append(Problem(seg_file, lineno, f"non-numeric times for '{utt}'"))
    if (data_dir / "ctm").exists() and "utt2spk" in tables:
        problems += _check_ctm(data_dir / "ctm", set(utt2spk))
    return problems


def _check_ctm(path: Path, utts: set[str]) -> list[Problem]:
    """Check an optional ``ctm``: five fields a line, times that make sense, utterances of the
    data dir, grouped in sorted order."""
    problems: list[Problem] = []
    done: set[str] = set()
    previous = None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            fields = raw.decode("utf-8", errors="replace").split()
            if len(fields) != 5:
                problems.append(Problem(str(path), lineno, "expected 'utt channel start duration word'"))
                continue
            utt, _, start, duration, _ = fields
            if utt != previous:
                if utt in done or (previous is not None and utt < previous):
                    problems.append(Problem(str(path), lineno, f"not grouped by sorted utterance: '{utt}' "
                                                               f"after '{previous}' (sort with LC_ALL=C)"))
                if utt not in utts:
                    problems.append(Problem(str(path), lineno, f"utterance '{utt}' is not in utt2spk"))
                done.add(utt)
                previous = utt
            try:
                if float(start) < 0 or float(duration) < 0:
                    problems.append(Problem(str(path), lineno, f"negative time for '{utt}'"))
            except ValueError:
                problems.append(Problem(str(path), lineno, f"non-numeric times for '{utt}'"))
    return problems


def _scan_table(path: Path) -> tuple[dict[str, str], list[Problem]]:
    """Read ``path`` leniently, collecting every format problem instead of stopping."""
    table: dict[str, str] = {}
    problems: list[Problem] = []
    previous = None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError:
                problems.append(Problem(str(path), lineno, "not valid UTF-8"))
                continue
            key, _, value = line.strip().partition(" ")
            if not key:
                problems.append(Problem(str(path), lineno, "empty line"))
                continue
            if not ID_PATTERN.match(key):
                problems.append(Problem(str(path), lineno,
                                        f"id '{key}' has characters outside [A-Za-z0-9_.-]"))
            if key in table:
                problems.append(Problem(str(path), lineno, f"duplicate id '{key}'"))
            elif previous is not None and key < previous:
                problems.append(Problem(str(path), lineno,
                                        f"not sorted: '{key}' after '{previous}' (sort with LC_ALL=C)"))
            if not value.strip() and path.name != "text":
                problems.append(Problem(str(path), lineno, f"'{key}' has no value"))
            table.setdefault(key, value.strip())
            previous = key
    return table, problems
