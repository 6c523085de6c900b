"""Shared plumbing for ``python -m mtbi.bin.<stage>`` entry points."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mtbi.config import dump_config, load_config
from mtbi.errors import MtbiError

if TYPE_CHECKING:
    import torch

# A full disk (ENOSPC), a quota (EDQUOT) or a file size limit (EFBIG, e.g. ulimit -f).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr in ESPnet's format (run.pl redirects it into the job log)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, force=True
    )


@dataclass(frozen=True)
class ConfigOption:
    """The option of an entry point that names its YAML config (e.g. ``--config``) and the
    config's dataclass: ``--set`` overrides its keys, ``--print_config`` shows it resolved."""

    flag: str
    cls: type

    def load(self, args: argparse.Namespace) -> Any:
        """The config that ``args`` name, with their ``--set`` overrides."""
        return load_config(getattr(args, self.flag.lstrip("-")), self.cls, args.set)


def _add_config_options(parser: argparse.ArgumentParser, config: ConfigOption) -> None:
    """``--set KEY=VALUE ...`` and ``--print_config`` for the config of ``config.flag``."""
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"override keys of {config.flag}: dotted keys, YAML values, e.g. "
                             "optim.learning_rate=1e-4 (a typo lists the valid keys)")
    parser.add_argument("--print_config", action="store_true",
                        help=f"print the resolved {config.flag} (defaults and --set included) and exit")


def _print_config(argv: Sequence[str], config: ConfigOption) -> None:
    """``--print_config``: only the config option and ``--set`` are read (the others may be absent)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(config.flag, default=None)
    _add_config_options(parser, config)
    args, _ = parser.parse_known_args(argv)
    dump_config(config.load(args), sys.stdout)


def run_main(
    build_parser: Callable[[], argparse.ArgumentParser],
    main: Callable[[argparse.Namespace], None],
    argv: Sequence[str] | None = None,
    config: ConfigOption | None = None,
) -> None:
    """Parse arguments, run ``main`` and turn an :class:`MtbiError`, or a full disk, into one
    line + exit 1. With ``config``, the entry point also takes ``--set`` and ``--print_config``."""
    parser = build_parser()
    parser.allow_abbrev = False  # an abbreviation (--print_conf) would silently run the stage
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    if config:
        _add_config_options(parser, config)
    argv = sys.argv[1:] if argv is None else list(argv)
    printing = config is not None and "--print_config" in argv and not {"-h", "--help"} & set(argv)
    args = None if printing else parser.parse_args(argv)
    setup_logging(bool(args and args.verbose))
    try:
        if printing:
            _print_config(argv, config)
        else:
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


def torch_device(name: str) -> torch.device:
    """The device ``--device`` names. ``cuda`` is this process's GPU: the first visible one, or
    under torchrun the one of its LOCAL_RANK. On GPUs float32 matmuls and convolutions may use
    TF32 (the frozen models run in bf16 or fp32; TF32 speeds fp32 with no effect on bf16)."""
    import torch  # here, so that entry points without models (record_env) start quickly

    device = torch.device(name)
    if device.type == "cuda":
        if device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise MtbiError(f"--device {name}: under torchrun each rank takes the GPU of its LOCAL_RANK; "
                            "use --device cuda")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device
