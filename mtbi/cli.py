"""Shared plumbing for ``python -m mtbi.bin.<stage>`` entry points."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Callable, Sequence

from mtbi.errors import MtbiError

# A full disk (ENOSPC), a quota (EDQUOT) or a file size limit (EFBIG, e.g. ulimit -f).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr in ESPnet's format (run.pl redirects it into the job log)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, force=True
    )


def run_main(
    build_parser: Callable[[], argparse.ArgumentParser],
    main: Callable[[argparse.Namespace], None],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse arguments, run ``main`` and turn an :class:`MtbiError`, or a full disk, into one
    line + exit 1."""
    parser = build_parser()
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        main(args)
    except MtbiError as err:
        # An error raised in a DataLoader worker comes back wrapped in the worker's traceback:
        # its last line is the message.
        print(f"ERROR: {str(err).strip().splitlines()[-1].split('MtbiError: ')[-1]}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        where = f"writing {err.filename}" if err.filename else "writing"
        print(f"ERROR: {where}: {err.strerror}; free disk space (or raise the quota) and re-run the "
              "stage: what it finished is kept", file=sys.stderr)
        sys.exit(1)


def str2bool(value: str) -> bool:
    """argparse type for Kaldi-style booleans: exactly ``true`` or ``false``."""
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")
    return value == "true"
