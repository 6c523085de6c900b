"""The stamp line of a generated results table: the date, the command that made it, and the mtbi
commit, machine (CPU kind, cores, SIMD), torch and torch threads its numbers were trained with,
read from each run's ``env.txt`` (stage 6's record), so that a reader can tell whether a table
belongs to the code in front of them and how far another machine's run may land from it."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Sequence

from mtbi.env import UNKNOWN, environment, read_blocks

ENV_FILE = "env.txt"


def run_environments(run_dirs: Sequence[str | Path]) -> list[dict[str, str]]:
    """The last block of each run dir's env.txt (its training's environment), for the dirs that
    have one (not the teacher's text-input answers, nor runs of mtbi versions before env.txt)."""
    found = []
    for run in run_dirs:
        path = Path(run) / ENV_FILE
        blocks = read_blocks(path.read_text(encoding="utf-8")) if path.is_file() else []
        if blocks:
            found.append(blocks[-1])
    return found


def _commit(env: dict[str, str]) -> str:
    commit = env.get("mtbi_commit", UNKNOWN)
    if commit == UNKNOWN:
        return "an unknown commit"
    return f"`{commit[:7]}`" + (" with uncommitted changes" if env.get("mtbi_dirty") == "true" else "")


def _threads(env: dict[str, str]) -> str:
    threads = env.get("torch_threads")
    if threads is None:
        return "unrecorded torch threads"
    return f"{threads} torch thread{'' if threads == '1' else 's'} per job" if threads.isdigit() else f"{threads} torch threads"


def _values(envs: list[dict[str, str]], describe) -> str:
    """The distinct descriptions of ``envs``, in order, joined by " / "."""
    return " / ".join(dict.fromkeys(describe(env) for env in envs))


def table_stamp(command: str, trained: list[dict[str, str]]) -> str:
    """``Made <date> by `<command>` from runs trained at mtbi commit ... on <cpu>, torch <v>, <threads>.``
    ``trained``: the environments of the runs the table reports (:func:`run_environments`); none:
    this process's own (a table of no trained runs), said as made here."""
    here = environment()
    envs = trained or [here]
    what = "from runs trained" if trained else "made"
    line = (f"Made {date.today().isoformat()} by `{command}` {what} at mtbi commit {_values(envs, _commit)} "
            f"on {_values(envs, lambda e: e.get('cpu', 'an unrecorded CPU'))}, "
            f"torch {_values(envs, lambda e: e.get('torch', UNKNOWN))}")
    if trained:
        line += f", {_values(envs, _threads)}"
        scored = _commit(here)
        if scored not in {_commit(env) for env in envs}:
            line += f"; scored at mtbi commit {scored}"
    return line + "."
