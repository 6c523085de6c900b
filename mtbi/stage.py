"""Stage bookkeeping, in one place: atomic outputs, ``.done`` markers with a recorded stamp,
shards and their merge, and resumable JSON-lines answers.

Every step that makes an output follows one idiom::

    step = Step(marker(out_dir), stamp={...what the output is made from...}, inputs=[...files...])
    if step.skip(f"{out_dir} is already made"):
        return
    ...write the outputs with atomic_write / atomic_dir...
    step.mark_done()

Marker format: a marker is a small JSON file holding the step's *stamp* (keys sorted): the
configuration, parameters and input fingerprints the output was made from. It is named
``<dir>/.done`` for a step that owns its directory and ``<dir>/.<name>.done`` for one of
several steps writing into one directory. A step is done, and skipped, when its marker holds an
equal stamp, is newer than each of its input files, and its outputs exist; a step writes its
marker last, so a killed step is redone. Shard ``k`` of ``n`` keeps its marker in
``<out_dir>/shards/.<k>.done`` (its stamp records ``shard`` and ``num_shards``); the merge runs
only when every shard is done and records their stamps. A file answered a chunk at a time keeps
the stamp it was begun with in ``.<file>.stamp`` beside it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Hashable, Iterator, Sequence, TypeVar

from tqdm import tqdm

from mtbi.errors import MtbiError

logger = logging.getLogger(__name__)

T = TypeVar("T")
PathLike = str | os.PathLike


# -- atomic outputs ------------------------------------------------------------------------------
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
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
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
def atomic_dir(path: PathLike) -> Iterator[Path]:
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


# -- stamps and markers --------------------------------------------------------------------------
def file_id(path: PathLike) -> str:
    """A file's identity for stamps: its resolved path, size and modification time."""
    path = Path(path)
    stat = path.stat()
    return f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def dir_fingerprint(directory: PathLike) -> str:
    """A digest of a directory's visible files (names, sizes, modification times): it changes
    when a model in it is retrained or replaced."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def marker(directory: PathLike, name: str | None = None) -> Path:
    """The ``.done`` marker of the step that owns ``directory``, or of its step ``name``."""
    return Path(directory) / (f".{name}.done" if name else ".done")


def read_stamp(path: PathLike) -> dict | None:
    """The stamp a marker (or a ``.stamp`` file) holds; None when it is missing or unreadable."""
    try:
        stamp = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _write_stamp(path: PathLike, stamp: dict) -> None:
    """Write ``stamp`` to the marker (or ``.stamp`` file) ``path``, atomically."""
    with atomic_write(path) as f:
        json.dump(stamp, f, sort_keys=True)


def _as_json(stamp: dict) -> dict:
    """``stamp`` as a marker gives it back (tuples as lists), so that the two compare equal."""
    return json.loads(json.dumps(stamp))


def _newer_than(path: Path, inputs: Sequence[PathLike]) -> bool:
    made = path.stat().st_mtime_ns
    return all(Path(p).stat().st_mtime_ns <= made for p in inputs if Path(p).exists())


@dataclass
class Step:
    """One step's bookkeeping: its marker ``path``, the ``stamp`` of what it makes its outputs
    from, its ``inputs`` (files or dirs whose change makes it stale) and its ``outputs`` (files
    that must exist for it to count as done)."""

    path: Path
    stamp: dict
    inputs: Sequence[PathLike] = ()
    outputs: Sequence[PathLike] = ()

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.stamp = _as_json(self.stamp)

    def is_done(self) -> bool:
        """True when the marker holds this stamp, is newer than every input and the outputs exist."""
        return (read_stamp(self.path) == self.stamp and _newer_than(self.path, self.inputs)
                and all(Path(p).exists() for p in self.outputs))

    def skip(self, message: str) -> bool:
        """:meth:`is_done`, logging ``message`` when it is."""
        done = self.is_done()
        if done:
            logger.info(message, stacklevel=2)
        return done

    def mark_done(self, inside: PathLike | None = None) -> None:
        """Write the marker, once every output is complete; ``inside``: the temporary dir of an
        :func:`atomic_dir` that becomes the marker's dir."""
        _write_stamp(Path(inside) / self.path.name if inside else self.path, self.stamp)

    def forget(self) -> None:
        """Remove the marker before rewriting outputs in place."""
        self.path.unlink(missing_ok=True)


# -- shards --------------------------------------------------------------------------------------
def shard_slice(items: Sequence[T], shard: int, num_shards: int) -> list[T]:
    """Every ``num_shards``-th of ``items``, from the ``shard``-th (1-based)."""
    if not 1 <= shard <= num_shards:
        raise MtbiError(f"shard {shard} is outside 1..{num_shards}")
    return list(items[shard - 1::num_shards])


def shard_step(out_dir: PathLike, shard: int, num_shards: int, stamp: dict,
               inputs: Sequence[PathLike] = (), outputs: Sequence[PathLike] = ()) -> Step:
    """The step of shard ``shard`` of ``num_shards`` writing under ``<out_dir>/shards``."""
    return Step(marker(Path(out_dir) / "shards", str(shard)),
                {**stamp, "shard": shard, "num_shards": num_shards}, inputs, outputs)


def merge_step(out_dir: PathLike, num_shards: int, what: str, stage: int, inputs: Sequence[PathLike] = (),
               outputs: Sequence[PathLike] = ()) -> Step:
    """The step merging ``num_shards`` shards of ``out_dir`` (``what`` of ``stage`` names them in
    errors). A shard that is missing, of another shard count or older than ``inputs`` is an
    error; the merge's stamp records the shards' stamps, and a shard done again makes it stale."""
    markers, stamps = [], []
    for shard in range(1, num_shards + 1):
        path = marker(Path(out_dir) / "shards", str(shard))
        stamp = read_stamp(path)
        if stamp is None or stamp.get("num_shards") != num_shards:
            raise MtbiError(f"{path}: {what} shard {shard}/{num_shards} is not finished; re-run stage {stage}")
        if not _newer_than(path, inputs):
            raise MtbiError(f"{path}: {what} shard {shard}/{num_shards} is older than its inputs "
                            f"({', '.join(map(str, inputs))}); re-run stage {stage}")
        markers.append(path)
        stamps.append(stamp)
    return Step(marker(out_dir), {"shards": stamps}, [*inputs, *markers], outputs)


# -- resumable answers ---------------------------------------------------------------------------
def _keep_complete_lines(path: PathLike, wanted: set, key: Callable[[dict], Hashable]) -> set:
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


def stamp_file(path: PathLike) -> Path:
    """Where the stamp a file answered a chunk at a time was begun with is kept: ``.<name>.stamp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.stamp")


def answer_resumably(path: Path, stamp: dict, items: Sequence[Any], answer: Callable[[list], list[Any]],
                     record: Callable[[Any, Any], dict], key: Callable[[dict], Hashable], chunk_size: int,
                     desc: str) -> None:
    """Append ``record(item, answer)`` lines for ``items`` (each with a ``key`` attribute equal
    to its line's ``key(record)``) to ``path``, ``chunk_size`` answers at a time, flushed and
    fsynced. A re-run after a kill keeps the complete lines and answers only the rest; a run with
    another ``stamp`` (recorded in :func:`stamp_file` beside ``path``), or none, starts the file anew."""
    begun_with = stamp_file(path)
    if path.exists() and read_stamp(begun_with) != _as_json(stamp):
        logger.info("%s: begun by another model, decoding or questions; answering again", path)
        path.unlink()
    _write_stamp(begun_with, stamp)
    answered = _keep_complete_lines(path, {i.key for i in items}, key)
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


def answer_to_file(final: PathLike, stamp: dict, items: Sequence[Any], answer: Callable[[list], list[Any]],
                   record: Callable[[Any, Any], dict], key: Callable[[dict], Hashable], chunk_size: int,
                   desc: str) -> Path:
    """Answer ``items`` into the jsonl ``final``, sorted by ``key``: through ``<stem>.partial.jsonl``
    with :func:`answer_resumably`, so a killed run resumes; skipped when it is done with the same
    ``stamp`` (its marker: ``.<stem>.done`` beside it). Returns ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f"{final.stem}.partial{final.suffix}")
    step = Step(marker(final.parent, final.stem), stamp, outputs=[final])
    if step.skip(f"{final} is already done"):
        return final
    answer_resumably(partial, stamp, items, answer, record, key, chunk_size, desc)
    with open(partial, encoding="utf-8") as f:
        records = sorted((json.loads(line) for line in f), key=key)
    with atomic_write(final) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    partial.unlink()
    stamp_file(partial).unlink()
    step.mark_done()
    return final
