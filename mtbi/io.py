"""Atomic file writes and ``.done`` markers shared by every stage."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Hashable, Iterable, Iterator, Sequence

from tqdm import tqdm

logger = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(path: Path) -> None:
    """Remove what a killed :func:`atomic_write` or :func:`atomic_dir` of ``path`` left beside it
    (``.<name>.<8 random characters>.tmp``, as ``tempfile`` names them)."""
    stale = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if stale.fullmatch(leftover.name):
            logger.info("removing %s, left by an interrupted run", leftover)
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    A crash or exception leaves ``path`` untouched (old content or absent), never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` as a whole on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_up_to_date(marker: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> bool:
    """True when ``marker`` exists and is newer than every existing input file."""
    marker = Path(marker)
    if not marker.exists():
        return False
    stamp = marker.stat().st_mtime_ns
    return all(Path(p).stat().st_mtime_ns <= stamp for p in inputs if Path(p).exists())


def touch_done(marker: str | os.PathLike, params: dict | None = None) -> None:
    """Write a ``.done`` marker holding ``params``; call it only after every output is complete."""
    with atomic_write(marker) as f:
        json.dump(params or {}, f, sort_keys=True)


def is_done_with(marker: str | os.PathLike, params: dict) -> bool:
    """True when ``marker`` exists and was written by :func:`touch_done` with equal ``params``."""
    marker = Path(marker)
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == params
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def keep_complete_lines(path: str | os.PathLike, wanted: set, key: Callable[[dict], Hashable]) -> set:
    """Make a resumable JSON-lines file whole again after a kill: rewrite ``path`` keeping its
    complete lines whose ``key(record)`` is in ``wanted`` (first occurrence only), and return
    those keys. The part after the last newline is a half-written line and is dropped."""
    path = Path(path)
    if not path.exists():
        return set()
    raw = path.read_bytes()
    kept_lines, keys = [], set()
    for line in raw.split(b"\n")[:-1]:
        try:
            k = key(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if k in wanted and k not in keys:
            keys.add(k)
            kept_lines.append(line + b"\n")
    if sum(map(len, kept_lines)) != len(raw):
        logger.info("%s: kept %d complete lines, dropped the rest", path, len(kept_lines))
        with atomic_write(path, "wb") as f:
            f.writelines(kept_lines)
    return keys


def file_id(path: str | os.PathLike) -> str:
    """A file's identity for stamps: its resolved path, size and modification time."""
    path = Path(path)
    stat = path.stat()
    return f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def record_key(record: dict) -> tuple[str, str, str]:
    """The (utt, task, prompt_id) key of a targets.jsonl or hyp.jsonl line."""
    return (record["utt"], record["task"], record["prompt_id"])


def answer_resumably(path: Path, params_path: Path, stamp: dict, items: Sequence[Any],
                     answer: Callable[[list], list[str]], record: Callable[[Any, str], dict],
                     chunk_size: int, desc: str) -> None:
    """Append ``record(item, answer)`` lines for ``items`` (each with a ``key`` equal to its
    line's :func:`record_key`) to ``path``, ``chunk_size`` answers at a time, flushed and
    fsynced. A re-run after a kill keeps the complete lines and answers only the rest; a run with
    another ``stamp`` (recorded in ``params_path``) starts the file anew."""
    if params_path.exists() and json.loads(params_path.read_text(encoding="utf-8")) != stamp:
        logger.info("%s: the model, decoding or questions changed; answering again", path)
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(params_path) as f:
        json.dump(stamp, f, sort_keys=True)
    answered = keep_complete_lines(path, {i.key for i in items}, record_key)
    todo = [i for i in items if i.key not in answered]
    logger.info("%s: %d questions, %d already answered", path, len(items), len(answered))
    with open(path, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc=desc, unit="answer",
                                                       mininterval=5.0) as progress:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            f.write("".join(json.dumps(record(i, a), ensure_ascii=False) + "\n" for i, a in zip(chunk, answer(chunk))))
            f.flush()
            os.fsync(f.fileno())
            progress.update(len(chunk))
