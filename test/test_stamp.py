"""The stamp of a results table (mtbi.bench.stamp) and the CPU it names (mtbi.env.cpu_description)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from mtbi.bench.stamp import run_environments, table_stamp
from mtbi.env import cpu_description, environment, format_block, record

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma
"""


def test_the_cpu_is_named_with_the_simd_that_sets_torch_kernels() -> None:
    cores = os.cpu_count()
    assert cpu_description(CPUINFO) == f"AMD EPYC 7B13 64-Core Processor ({cores} cores, avx2)"
    sapphire = CPUINFO.replace("avx2 fma", "avx2 avx512f avx512_bf16 amx_bf16")
    assert cpu_description(sapphire).endswith("cores, avx512f, avx512_bf16, amx_bf16)")
    assert cpu_description("processor\t: 0\nFeatures\t: fp asimd\n").endswith("cores, asimd)")


def _trained(run: Path, commit: str, dirty: str = "false", threads: str = "1", cpu: str = "CPU A (2 cores, avx2)") -> Path:
    run.mkdir(parents=True)
    env = {**environment(), "mtbi_commit": commit, "mtbi_dirty": dirty, "cpu": cpu, "torch_threads": threads}
    (run / "env.txt").write_text(format_block(env, 6))
    return run


def test_the_stamp_names_what_trained_the_runs(tmp_path: Path) -> None:
    here = environment()
    runs = [_trained(tmp_path / "sllm_mtbi", "a" * 40), _trained(tmp_path / "sllm_mtbi_seed1", "a" * 40),
            tmp_path / "teacher_text"]  # the teacher's answers: no training, no env.txt
    stamp = table_stamp("local/run_baselines.sh", run_environments(runs))
    expected = (f"Made {date.today().isoformat()} by `local/run_baselines.sh` from runs trained at mtbi commit "
                f"`aaaaaaa` on CPU A (2 cores, avx2), torch {here['torch']}, 1 torch thread per job")
    assert stamp.startswith(expected)
    assert "; scored at mtbi commit " in stamp  # this checkout is not at commit aaaaaaa
    # runs of two commits and machines: both named, once each
    mixed = [_trained(tmp_path / "sllm_blsp", "b" * 40, dirty="true", threads="default (16 cores)", cpu="CPU B")]
    stamp = table_stamp("./run.sh", run_environments(runs + mixed))
    assert "at mtbi commit `aaaaaaa` / `bbbbbbb` with uncommitted changes on CPU A (2 cores, avx2) / CPU B" in stamp
    assert "1 torch thread per job / default (16 cores) torch threads" in stamp


def test_a_table_of_no_trained_runs_is_stamped_with_this_environment(tmp_path: Path) -> None:
    record(tmp_path / "env.txt", 1, torch_threads="2")
    assert "torch_threads: 2" in (tmp_path / "env.txt").read_text()
    stamp = table_stamp("tools/reliability_report.py", [])
    assert stamp.startswith(f"Made {date.today().isoformat()} by `tools/reliability_report.py` made at mtbi commit ")
    assert f" on {cpu_description()}, torch {environment()['torch']}." in stamp and "thread" not in stamp
