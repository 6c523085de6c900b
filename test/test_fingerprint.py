"""Content digests of recipe outputs: equal content gives equal digests whatever the file's
encoding or line order, one changed value changes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file

from mtbi.bench.fingerprint import audio_digest, differences, recipe_fingerprint, records_digest, tensors_digest


def make_outputs(root: Path, audio_format: str = "WAV", weights_scale: float = 1.0, reverse_lines: bool = False) -> None:
    """A recipe dir with one data dir of two utterances, SLLM weights and benchmark answers."""
    data = root / "data" / "test"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for utt in ("u1", "u2"):
        path = root / f"{utt}.{audio_format.lower()}"
        sf.write(path, (rng.uniform(-0.5, 0.5, 8000) * 32767).astype(np.int16), 16000, format=audio_format)
        lines.append(f"{utt} {path}\n")
    (data / "wav.scp").write_text("".join(lines))
    run = root / "exp" / "sllm_mtbi"
    (run / "bench_test").mkdir(parents=True)
    save_file({"b": torch.arange(4.0) * weights_scale, "a": torch.ones(2, 3)}, run / "model.safetensors")
    records = [{"utt": u, "prompt_id": p, "hyp": f"{u} {p}", "time": str(reverse_lines)}
               for u in ("u1", "u2") for p in ("asr/0", "asr/1")]
    hyp_lines = [json.dumps(r) + "\n" for r in records]
    (run / "bench_test" / "hyp.jsonl").write_text("".join(reversed(hyp_lines) if reverse_lines else hyp_lines))


def test_equal_content_gives_equal_digests(tmp_path: Path) -> None:
    make_outputs(tmp_path / "a")
    make_outputs(tmp_path / "b", audio_format="FLAC", reverse_lines=True)  # other bytes, same content
    mine, theirs = (recipe_fingerprint(tmp_path / d, "exp", "dump/raw") for d in "ab")
    assert set(mine) == {"audio test", "sllm_mtbi weights", "sllm_mtbi bench_test"}
    assert differences(mine, theirs) == {name: "same" for name in mine}


def test_a_changed_value_changes_its_digest(tmp_path: Path) -> None:
    make_outputs(tmp_path)
    weights = tmp_path / "exp" / "sllm_mtbi" / "model.safetensors"
    before = tensors_digest(weights)
    save_file({"b": torch.arange(4.0), "a": torch.ones(2, 3).double()}, weights)  # same values, another dtype
    assert tensors_digest(weights) != before
    hyp = tmp_path / "exp" / "sllm_mtbi" / "bench_test" / "hyp.jsonl"
    answers = records_digest(hyp, ("utt", "prompt_id"), "hyp")
    hyp.write_text(hyp.read_text().replace('"hyp": "u2 asr/1"', '"hyp": "u2 asr/1."'))
    assert records_digest(hyp, ("utt", "prompt_id"), "hyp") != answers
    audio = audio_digest(tmp_path / "data" / "test")
    samples, rate = sf.read(tmp_path / "u1.wav", dtype="int16")
    samples[100] += 1  # one sample, one step of 16 bits
    sf.write(tmp_path / "u1.wav", samples, rate)
    assert audio_digest(tmp_path / "data" / "test") != audio


def test_differences_names_what_only_one_side_has() -> None:
    assert differences({"x": "1", "y": "2", "z": "3"}, {"x": "1", "y": "0", "w": "4"}) == \
        {"w": "only there", "x": "same", "y": "differs", "z": "only here"}


def test_cli_compares_with_another_machines_file(tmp_path: Path) -> None:
    make_outputs(tmp_path / "a")
    make_outputs(tmp_path / "b", weights_scale=1.0 + 1e-7)  # one weight off by its last bit or so
    cmd = [sys.executable, "-m", "mtbi.bin.fingerprint", "--recipe_dir"]
    first = subprocess.run([*cmd, str(tmp_path / "a"), "--out", str(tmp_path / "a.json")],
                           capture_output=True, text=True, check=True)
    assert "sllm_mtbi weights" in first.stdout
    second = subprocess.run([*cmd, str(tmp_path / "b"), "--out", str(tmp_path / "b.json"), "--compare",
                             str(tmp_path / "a.json")], capture_output=True, text=True, check=True)
    verdicts = dict(line.rsplit(None, 1) for line in second.stdout.splitlines())
    assert {k.strip(): v for k, v in verdicts.items()} == \
        {"audio test": "same", "sllm_mtbi weights": "differs", "sllm_mtbi bench_test": "same"}
    missing = subprocess.run([*cmd, str(tmp_path / "b"), "--out", str(tmp_path / "c.json"), "--compare",
                              str(tmp_path / "nowhere.json")], capture_output=True, text=True)
    assert missing.returncode == 1 and "--compare" in missing.stderr and "nowhere.json" in missing.stderr
