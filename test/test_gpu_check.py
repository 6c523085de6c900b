"""tools/gpu_check.sh: its tiny CPU mode end to end (torchrun included), its FLOP formula against
torch's flop counter, and that it runs without the speech-data packages, which the GPU machines
it is meant for do not have (only torch and transformers)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import REPO_ROOT
from torch.utils.flop_counter import FlopCounterMode

NOT_NEEDED = ("espnet", "espnet2", "kaldiio", "soundfile", "sentencepiece", "lhotse", "soxr")
# Installed here, so they are blocked: a None in sys.modules makes `import x` fail and
# importlib.util.find_spec(x) None (transformers then takes them as absent).
BLOCK_NOT_NEEDED = f"import sys\nsys.modules.update(dict.fromkeys({NOT_NEEDED!r}))\n"
ATTENTION_PARTS = ("encoder_attention", "llm_forward_attention", "llm_backward_attention")


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_figure(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_NOT_NEEDED)
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([str(REPO_ROOT / "tools" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert results["device_type"] == "cpu" and results["tiny"]
    assert results["matmul"]["tflops"] > 0
    assert [r["gradient_checkpointing"] for r in results["train"]] == [False, True]
    for train in results["train"]:
        assert all(train[key] > 0 for key in ("step_seconds", "model_tflop_per_step", "tflops", "mfu_vs_matmul")), train
        assert train["attention"] == "sdpa"
    assert [r["llm"] for r in results["generate"]] == ["tiny-llama", "tiny-qwen2"]
    assert all(r["answers_per_s"] > 0 and r["new_tokens_per_s"] > 0 for r in results["generate"])
    ddp = results["ddp"]
    assert (ddp["backend"], ddp["world_size"], ddp["device"]) == ("gloo", 1, "cpu")
    assert ddp["plain_step_seconds"] > 0 and ddp["ddp_step_seconds"] > 0 and ddp["ddp_over_plain"] > 0
    for result in [results["matmul"], *results["train"], *results["generate"], ddp]:
        assert result["name"] in proc.stdout

    results["train"][1] = {"name": "train too big", "error": "out of memory", "peak_memory_gib": 139.9}
    table = load_tool("gpu_check_report").table(results).splitlines()
    assert [line.split()[3:] for line in table if line.startswith("train too big")] == [["out", "of", "memory", "139.9"]]


def test_out_of_memory_is_recorded_and_the_next_measurement_runs() -> None:
    gpu_check = load_tool("gpu_check")

    def too_big() -> dict:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    cpu = torch.device("cpu")
    assert gpu_check.guarded("train too big", too_big, cpu)["error"] == "out of memory"
    assert gpu_check.guarded("next", lambda: {"seconds": 1.0}, cpu)["seconds"] == 1.0


def test_flop_formula_weight_terms_equal_torch_flop_counter() -> None:
    gpu_check = load_tool("gpu_check")
    plan, cpu = gpu_check.TINY, torch.device("cpu")
    pair = plan.pairs[0]
    model = gpu_check.build_speech_llm(pair, plan.connector, cpu, torch.float32)
    batch = gpu_check.synthetic_batch(plan, pair.batch_size, pair.encoder.n_mels, pair.llm.vocab_size, cpu,
                                      torch.Generator().manual_seed(0))
    step = gpu_check.training_step(model, gpu_check.trainable_optimizer(model), batch,
                                   gpu_check.autocast(cpu, torch.float32))
    with FlopCounterMode(display=False) as counter:
        step()
    counted = sum(flops for op, flops in counter.get_flop_counts()["Global"].items()
                  if "scaled_dot_product" not in str(op))  # attention: the formula's alone (see gpu_check.py)
    formula = gpu_check.train_step_flops(model, batch)
    assert counted == pytest.approx(formula["total"] - sum(formula[part] for part in ATTENTION_PARTS), rel=1e-3)
    assert all(formula[part] > 0 for part in ATTENTION_PARTS)
