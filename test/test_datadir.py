"""Kaldi data dir round trip and validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mtbi.data.datadir import Utterance, read_table, subset_data_dir, utt_ids, validate_data_dir, write_data_dir
from mtbi.errors import MtbiError

UTTS = [
    Utterance("spkB-002", "spkB", "/audio/b2.flac", "third one"),
    Utterance("spkA-001", "spkA", "/audio/a1.flac", "hello there"),
    Utterance("spkA-002", "spkA", "/audio/a2.flac", "second utterance"),
]


def test_round_trip_sorted(tmp_path: Path) -> None:
    write_data_dir(tmp_path, UTTS)
    assert (tmp_path / "wav.scp").read_text().splitlines() == [
        "spkA-001 /audio/a1.flac", "spkA-002 /audio/a2.flac", "spkB-002 /audio/b2.flac"]
    assert read_table(tmp_path / "text")["spkA-002"] == "second utterance"
    assert read_table(tmp_path / "spk2utt") == {"spkA": "spkA-001 spkA-002", "spkB": "spkB-002"}
    assert utt_ids(tmp_path) == ["spkA-001", "spkA-002", "spkB-002"]
    assert validate_data_dir(tmp_path) == []


def test_subset(tmp_path: Path) -> None:
    write_data_dir(tmp_path / "full", UTTS)
    subset_data_dir(tmp_path / "full", tmp_path / "sub", {"spkA-002", "spkB-002"})
    assert utt_ids(tmp_path / "sub") == ["spkA-002", "spkB-002"]
    assert read_table(tmp_path / "sub" / "spk2utt") == {"spkA": "spkA-002", "spkB": "spkB-002"}
    assert validate_data_dir(tmp_path / "sub") == []


def test_duplicate_id_rejected_on_write(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match="duplicate utterance id 'spkA-001'"):
        write_data_dir(tmp_path, UTTS + [UTTS[1]])


@pytest.mark.parametrize("content, message", [
    (b"a 1\na 2\n", "duplicate key 'a'"),
    (b"a 1\nb\n", "'b' has no value"),
    (b"a 1\nb \xff\xfe\n", "not valid UTF-8"),
])
def test_read_table_errors_name_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "wav.scp"
    path.write_bytes(content)
    with pytest.raises(MtbiError, match=f"wav.scp:2: {message}"):
        read_table(path)


def test_read_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match="file not found"):
        read_table(tmp_path / "text")


def _problems(data_dir: Path) -> list[str]:
    return [str(p) for p in validate_data_dir(data_dir)]


def test_validate_reports_each_problem_with_file_and_line(tmp_path: Path) -> None:
    write_data_dir(tmp_path, UTTS)
    (tmp_path / "text").write_text("spkA-002 second\nspkA-001 hello\nspkB-002 \n")
    (tmp_path / "wav.scp").write_text("spkA-001 /a\nspkA-002 /b\n")
    (tmp_path / "utt2spk").write_text("spkA-001 spkA\nspkA-002 spkA\nspkB-002 other\n")
    problems = _problems(tmp_path)
    text, wav, utt2spk, spk2utt = (str(tmp_path / n) for n in ("text", "wav.scp", "utt2spk", "spk2utt"))
    assert f"{text}:2: not sorted: 'spkA-001' after 'spkA-002' (sort with LC_ALL=C)" in problems
    assert f"{text}:3: empty transcript for 'spkB-002'" in problems
    assert f"{wav}: utterance 'spkB-002' (in utt2spk) is missing" in problems
    assert f"{utt2spk}: utterance id 'spkB-002' is not prefixed by its speaker id 'other'" in problems
    assert f"{spk2utt}: does not match utt2spk; regenerate it from utt2spk" in problems


def test_validate_unsafe_ids_and_missing_files(tmp_path: Path) -> None:
    write_data_dir(tmp_path, UTTS)
    (tmp_path / "text").write_text("spkA-001 a\nspkA-002 b\nspkB-002;rm c\n")
    (tmp_path / "spk2utt").unlink()
    problems = _problems(tmp_path)
    assert any("id 'spkB-002;rm' has characters outside" in p for p in problems)
    assert f"{tmp_path / 'spk2utt'}: required file missing" in problems


def test_validate_segments(tmp_path: Path) -> None:
    write_data_dir(tmp_path, UTTS)
    (tmp_path / "segments").write_text("spkA-001 rec1 0.0 1.5\nspkA-002 rec1 2.0 1.0\nspkB-002 rec9 0 1\n")
    (tmp_path / "wav.scp").write_text("rec1 /audio/long.flac\n")
    problems = _problems(tmp_path)
    assert f"{tmp_path / 'segments'}:2: bad times 2.0 1.0 for 'spkA-002'" in problems
    assert f"{tmp_path / 'segments'}:3: recording 'rec9' is not in wav.scp" in problems
    assert len(problems) == 2


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    write_data_dir(tmp_path, UTTS)
    ok = subprocess.run([sys.executable, "-m", "mtbi.bin.validate_data_dir", str(tmp_path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK")
    (tmp_path / "utt2spk").write_text("spkA-001 spkA\n")
    bad = subprocess.run([sys.executable, "-m", "mtbi.bin.validate_data_dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "utterance 'spkA-002' is not in utt2spk" in bad.stdout


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    old = os.umask(0o022)
    try:
        write_data_dir(tmp_path / "d", UTTS)
    finally:
        os.umask(old)
    assert oct((tmp_path / "d" / "text").stat().st_mode & 0o777) == "0o644"


def test_subset_and_validation_of_the_optional_ctm(tmp_path: Path) -> None:
    write_data_dir(tmp_path / "full", UTTS)
    (tmp_path / "full" / "ctm").write_text("spkA-001 1 0.1 0.2 hello\nspkA-001 1 0.3 0.2 there\n"
                                           "spkB-002 1 0.0 0.4 third\n")
    assert validate_data_dir(tmp_path / "full") == []
    subset_data_dir(tmp_path / "full", tmp_path / "sub", {"spkB-002"})
    assert (tmp_path / "sub" / "ctm").read_text() == "spkB-002 1 0.0 0.4 third\n"
    (tmp_path / "full" / "ctm").unlink()
    subset_data_dir(tmp_path / "full", tmp_path / "sub", {"spkB-002"})
    assert not (tmp_path / "sub" / "ctm").exists()

    (tmp_path / "full" / "ctm").write_text("spkB-002 1 0.0 0.4 third\nspkA-001 1 x 0.2 hello\n"
                                           "spkC-001 1 0.0 -1 who\nspkA-001 1 0.0 0.2\n")
    assert [str(p).split("/")[-1] for p in validate_data_dir(tmp_path / "full")] == [
        "ctm:2: not grouped by sorted utterance: 'spkA-001' after 'spkB-002' (sort with LC_ALL=C)",
        "ctm:2: non-numeric times for 'spkA-001'",
        "ctm:3: utterance 'spkC-001' is not in utt2spk",
        "ctm:3: negative time for 'spkC-001'",
        "ctm:4: expected 'utt channel start duration word'",
    ]
