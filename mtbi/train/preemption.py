"""Stop training cleanly when the cluster asks: on SIGTERM (Slurm's time limit and preemption;
torchrun forwards it to its workers) or SIGUSR1 (Slurm's ``--signal=USR1@<seconds>`` warning).

While :class:`StopSignals` is entered these signals only record that they came (outside it, e.g.
while the model loads, they end the process as before). The trainer asks :meth:`StopSignals.agreed`
after each optimizer step: one all-reduce tells every rank whether any rank got one, so all ranks
stop after the same step, write its checkpoint and raise :class:`TrainingStopped`; the entry
point then exits with :data:`EXIT_STOPPED`, and the same command resumes from that checkpoint.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Callable

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# sysexits.h EX_TEMPFAIL ("try again later"): not an error (1), and not done (0), so mtbi.sh stops.
EXIT_STOPPED = 75


class TrainingStopped(Exception):
    """Training stopped on ``signal_name`` after step ``step``, whose ``checkpoint`` it wrote."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        super().__init__(f"training stopped by {signal_name} at step {step}: checkpoint {checkpoint} written; "
                         "run the same command to resume")


class StopSignals:
    """Within ``with StopSignals() as signals:``, SIGTERM and SIGUSR1 are recorded, not acted on;
    the previous handlers come back on leaving."""

    def __init__(self) -> None:
        self.received: set[signal.Signals] = set()
        self._previous: dict[signal.Signals, Callable | int | None] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._record) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # None: the old handler was not set from Python (it cannot be put back); the default is.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.add(signal.Signals(signum))

    def agreed(self, all_sum: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> str | None:
        """The name of a stop signal that any rank received, the same on every rank (``all_sum``:
        the sum over the ranks, called once), or None."""
        counts = all_sum(torch.tensor([float(sig in self.received) for sig in STOP_SIGNALS], device=device))
        return next((sig.name for sig, count in zip(STOP_SIGNALS, counts.tolist()) if count > 0), None)
