"""The environment a stage ran in, appended to ``<expdir>/log/env.txt`` by ``mtbi.bin.record_env``.

A file holds one block per stage run, oldest first: a header line, then ``key: value`` lines
(values on one line), then an empty line::

    # stage 6 at 2025-06-01T12:00:00+02:00
    host: node12
    python: 3.11.7 (main, ...) [GCC 12.2.0]
    cpu: AMD EPYC 7B13 (16 cores, avx2)
    mtbi_commit: 690affe...
    mtbi_dirty: false
    torch: 2.3.0+cu121
    ...

Cheap by design (the driver records every stage): package versions come from their metadata and
torch's CUDA build from ``torch/version.py``, so nothing heavy is imported; torch is imported only
to name the GPUs, and only where there may be some (``nvidia-smi`` on the PATH or
``CUDA_VISIBLE_DEVICES`` set). What cannot be found out is written as ``unknown``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

UNKNOWN = "unknown"
PACKAGES = ("torch", "transformers", "peft", "espnet", "safetensors", "numpy", "huggingface_hub")
ENV_VARS = ("CUDA_VISIBLE_DEVICES", "MTBI_GPUS", "SLURM_JOB_ID")
CHECKOUT = Path(__file__).resolve().parents[1]
_HEADER = re.compile(r"# stage (\S+) at (\S+)")
# The widest SIMD of /proc/cpuinfo's flags (torch's CPU kernels differ by it), and those that
# make bf16 native.
_SIMD_FLAGS = ("avx512f", "avx2", "avx", "asimd", "sse4_2")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _command(*args: str, cwd: Path | None = None) -> str | None:
    """The stdout of a command that succeeds within 30 s, else None (missing, failed, hung)."""
    # No optional locks: `git status` would otherwise refresh the index under index.lock, and
    # stages recorded at once (or an engineer's own git command) would then fail on the lock.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state(checkout: Path = CHECKOUT) -> tuple[str, str]:
    """The commit of ``checkout`` and whether its work tree has uncommitted changes, untracked files
    included (``"true"``/``"false"``); ``unknown`` for both when git is missing or ``checkout`` is
    not the top of a git work tree."""
    checkout = Path(checkout).resolve()
    # The top-level check: an installed copy inside some other repository is not that repository.
    found = _command("git", "rev-parse", "--show-toplevel", "HEAD", cwd=checkout) if checkout.is_dir() else None
    if not found or len(found.splitlines()) != 2 or Path(found.splitlines()[0]).resolve() != checkout:
        return UNKNOWN, UNKNOWN
    commit = found.splitlines()[1]
    # Untracked files count (a module not yet added changes what runs); .gitignore keeps outputs out.
    status = _command("git", "status", "--porcelain", cwd=checkout)
    return commit, UNKNOWN if status is None else str(bool(status)).lower()


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU kind, its core count and the SIMD that sets torch's CPU kernels, e.g.
    ``AMD EPYC 7B13 (16 cores, avx2)``; ``cpuinfo``: the text of /proc/cpuinfo (read when None)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or UNKNOWN
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    simd = [next((f for f in _SIMD_FLAGS if f in flags), "simd unknown")] + [f for f in _BF16_FLAGS if f in flags]
    return f"{name} ({os.cpu_count()} cores, {', '.join(simd)})"


def _torch_cuda_build() -> str:
    """torch's CUDA version (``torch.version.cuda``; ``none`` for a CPU build), read from
    ``torch/version.py`` without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return UNKNOWN
    try:
        tree = ast.parse(Path(spec.origin).with_name("version.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return UNKNOWN
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if isinstance(target, ast.Name) and target.id == "cuda" and isinstance(node.value, ast.Constant):
            return str(node.value.value or "none")
    return UNKNOWN


def _gpus() -> dict[str, str]:
    """Whether CUDA is available to torch and, if so, the visible GPUs' names and the driver."""
    if not (shutil.which("nvidia-smi") or os.environ.get("CUDA_VISIBLE_DEVICES")):
        return {"cuda_available": "not checked (no nvidia-smi, CUDA_VISIBLE_DEVICES unset)"}
    # A broken CUDA set-up is what this record is for: write what it says instead of losing the block.
    try:
        import torch

        if not torch.cuda.is_available():
            return {"cuda_available": "false"}
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as err:
        return {"cuda_available": f"{UNKNOWN} ({type(err).__name__}: {err})"}
    driver = _command("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    return {"cuda_available": "true", "gpus": ", ".join(names),
            "nvidia_driver": ", ".join(dict.fromkeys(driver.splitlines())) if driver else UNKNOWN}


def environment() -> dict[str, str]:
    """The environment of this process: time, host, Python, the mtbi commit, package versions
    (those installed of :data:`PACKAGES`), CUDA and GPUs, and the set ones of :data:`ENV_VARS`."""
    commit, dirty = git_state()
    env = {"time": datetime.now().astimezone().isoformat(timespec="seconds"), "host": socket.gethostname(),
           "platform": platform.platform(), "cpu": cpu_description(), "python": sys.version, "mtbi_commit": commit,
           "mtbi_dirty": dirty}
    for name in PACKAGES:
        try:
            env[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    env["torch_cuda"] = _torch_cuda_build()
    env.update(_gpus())
    env.update({name: os.environ[name] for name in ENV_VARS if name in os.environ})
    return env


def format_block(env: dict[str, str], stage: int) -> str:
    """One block of env.txt: the header with ``stage`` and ``env["time"]``, then the other keys."""
    lines = [f"# stage {stage} at {env['time']}"]
    lines += [f"{key}: {' '.join(str(value).splitlines())}" for key, value in env.items() if key != "time"]
    return "\n".join(lines) + "\n\n"


def read_blocks(text: str) -> list[dict[str, str]]:
    """The blocks of an env.txt, oldest first; each holds ``stage`` and ``time`` from its header."""
    blocks = []
    for line in text.splitlines():
        header = _HEADER.fullmatch(line)
        if header:
            blocks.append({"stage": header[1], "time": header[2]})
        elif line and blocks:
            key, _, value = line.partition(": ")
            blocks[-1][key] = value
    return blocks


def record(path: str | os.PathLike, stage: int, torch_threads: str | None = None) -> str:
    """Append the block of this environment for ``stage`` to ``path`` and return it;
    ``torch_threads``: the torch CPU threads of the job recorded (its results can depend on them).

    One ``write`` to a file opened for appending, so blocks of stages recorded at once do not
    interleave.
    """
    env = environment()
    if torch_threads is not None:
        env["torch_threads"] = torch_threads
    block = format_block(env, stage)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, block.encode("utf-8"))
    finally:
        os.close(fd)
    return block
