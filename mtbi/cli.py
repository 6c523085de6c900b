"""Shared plumbing for ``python -m mtbi.bin.<stage>`` entry points."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from mtbi.errors import MtbiError

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
    """Parse arguments, run ``main`` and turn an :class:`MtbiError` into one line + exit 1."""
    parser = build_parser()
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        main(args)
    except MtbiError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)


def str2bool(value: str) -> bool:
    """argparse type for Kaldi-style booleans: exactly ``true`` or ``false``."""
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")
    return value == "true"
