"""Atomic file writes and ``.done`` markers shared by every stage."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    A crash or exception leaves ``path`` untouched (old content or absent), never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
