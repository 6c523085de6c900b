"""Stage bookkeeping (mtbi/stage.py): the marker format, done-checks, shards and their merge,
atomic outputs and resumable answers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mtbi.errors import MtbiError
from mtbi.stage import Step, answer_resumably, atomic_dir, atomic_write, marker, merge_step, read_stamp, shard_slice, shard_step, stamp_file


def _age(path: Path, seconds: int) -> None:
    """Set ``path``'s modification time ``seconds`` into the past (mtime order without sleeping)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 10**9))


def test_a_marker_is_the_json_stamp_and_decides_done(tmp_path: Path) -> None:
    source, output = tmp_path / "input.txt", tmp_path / "out" / "result.txt"
    source.write_text("x")
    output.parent.mkdir()
    output.write_text("y")
    step = Step(marker(tmp_path / "out"), {"b": (1, 2), "a": "z"}, [source], [output])
    assert step.path == tmp_path / "out" / ".done" and marker(tmp_path, "align") == tmp_path / ".align.done"
    assert not step.is_done()
    step.mark_done()
    assert step.path.read_text() == '{"a": "z", "b": [1, 2]}'  # keys sorted, tuples as lists
    assert read_stamp(step.path) == {"a": "z", "b": [1, 2]} and step.is_done()
    assert not Step(step.path, {"a": "other", "b": [1, 2]}, [source], [output]).is_done()
    _age(step.path, 10)  # the input is now newer than the marker
    assert not step.is_done()
    step.mark_done()
    output.unlink()
    assert not step.is_done()
    step.forget()
    assert not step.path.exists() and read_stamp(step.path) is None


def test_a_marker_written_inside_an_atomic_dir_appears_with_it(tmp_path: Path) -> None:
    out = tmp_path / "cache"
    out.mkdir()
    (out / "old.txt").write_text("old")
    step = Step(marker(out), {"k": 1})
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        step.mark_done(inside=tmp)
        assert not step.is_done()
    assert sorted(p.name for p in out.iterdir()) == [".done", "new.txt"] and step.is_done()


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "table"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table"]


def test_shards_and_their_merge(tmp_path: Path) -> None:
    data = tmp_path / "wav.scp"
    data.write_text("a\n")
    assert shard_slice(list("abcde"), 2, 2) == ["b", "d"]
    with pytest.raises(MtbiError, match="shard 3 is outside 1..2"):
        shard_slice(list("abc"), 3, 2)
    first = shard_step(tmp_path, 1, 2, {"n_mels": 80}, [data])
    assert first.path == tmp_path / "shards" / ".1.done" and first.stamp == {"n_mels": 80, "shard": 1, "num_shards": 2}
    first.mark_done()
    with pytest.raises(MtbiError, match=r"\.2\.done: feature shard 2/2 is not finished; re-run stage 2"):
        merge_step(tmp_path, 2, "feature", 2, [data])
    shard_step(tmp_path, 2, 3, {"n_mels": 80}, [data]).mark_done()  # a shard of another split
    with pytest.raises(MtbiError, match="shard 2/2 is not finished"):
        merge_step(tmp_path, 2, "feature", 2, [data])
    second = shard_step(tmp_path, 2, 2, {"n_mels": 80}, [data])
    second.mark_done()
    merge = merge_step(tmp_path, 2, "feature", 2, [data])
    assert merge.stamp == {"shards": [first.stamp, second.stamp]}
    merge.mark_done()
    assert merge_step(tmp_path, 2, "feature", 2, [data]).is_done()
    _age(merge.path, 10)
    second.mark_done()  # shard 2 done again: the merge is stale
    assert not merge_step(tmp_path, 2, "feature", 2, [data]).is_done()
    data.write_text("b\n")  # the data changed after shard 1
    _age(first.path, 10)
    with pytest.raises(MtbiError, match=r"feature shard 1/2 is older than its inputs \(.*wav.scp\); re-run stage 2"):
        merge_step(tmp_path, 2, "feature", 2, [data])


@dataclass(frozen=True)
class Question:
    key: str


def _key(record: dict) -> str:
    return record["key"]


def _answer_all(path: Path, stamp: dict, keys: str) -> list[str]:
    """Answer every question of ``keys``; return the keys answered in this call."""
    asked: list[str] = []

    def answer(chunk: list[Question]) -> list[str]:
        asked.extend(q.key for q in chunk)
        return [q.key.upper() for q in chunk]

    answer_resumably(path, stamp, [Question(k) for k in keys], answer, lambda q, a: {"key": q.key, "answer": a},
                     _key, chunk_size=2, desc="test")
    return asked


def test_answers_resume_after_a_half_written_line_and_restart_for_another_stamp(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    assert _answer_all(path, {"model": 1}, "abcd") == list("abcd")
    assert read_stamp(stamp_file(path)) == {"model": 1}
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:5])  # as a kill in the middle of the third line
    assert _answer_all(path, {"model": 1}, "abcd") == ["c", "d"]
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == list("abcd")
    assert _answer_all(path, {"model": 2}, "abcd") == list("abcd")  # another model: all again
    assert len(path.read_text().splitlines()) == 4
    stamp_file(path).unlink()  # a file whose stamp is unknown is not trusted either
    assert _answer_all(path, {"model": 2}, "abcd") == list("abcd")
