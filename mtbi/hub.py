"""Models named by a local dir or a Hugging Face hub id: where their files are, which commit.

``model_dir:`` in a teacher or encoder config is either a local model dir or a hub id
(``owner/name``, with an optional ``revision:`` branch, tag or commit). A hub id is fetched with
``huggingface_hub.snapshot_download``, so ``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` act as
they do for transformers, and only the files a model needs are downloaded (safetensors weights,
JSON configs, tokenizer files; no PyTorch pickles, TensorFlow or Flax weights).

A directory that must stay movable (an encoder dir, a trained SLLM dir) records a model by
:meth:`ResolvedModel.reference`: the hub id and the commit it resolved to, or the path relative to
itself, never an absolute path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mtbi.errors import MtbiError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
DTYPES = ("float32", "bfloat16", "float16")  # the precisions frozen models may be loaded in


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config's ``dtype`` (one of :data:`DTYPES`)."""
    return getattr(torch, name)


@dataclass(frozen=True)
class ResolvedModel:
    """A model's local files, and the hub repo and commit they came from (None: a local dir)."""

    path: Path
    hub_id: str | None = None
    commit: str | None = None

    def reference(self, relative_to: str | Path) -> dict:
        """``{"model", "revision"}``: the hub id and commit, or the path relative to ``relative_to``
        (``./x`` or ``../x``, so that it is never read as a hub id)."""
        if self.hub_id:
            return {"model": self.hub_id, "revision": self.commit}
        return {"model": relative_path(self.path, relative_to), "revision": None}


def relative_path(path: str | Path, start: str | Path) -> str:
    """``path`` relative to the directory ``start``, starting with ``./`` or ``../``."""
    rel = os.path.relpath(Path(path).resolve(), Path(start).resolve())
    return rel if rel.startswith("..") else f"./{rel}"


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a hub repo id (``owner/name``)."""
    return bool(HUB_ID.match(name)) and ".." not in name


def resolve_model(model: str, revision: str | None = None, base_dir: str | Path = ".",
                  what: str = "model_dir", patterns: list[str] = MODEL_FILES) -> ResolvedModel:
    """The local files of ``model``: a dir (relative paths from ``base_dir``), else the snapshot of
    the hub repo ``model`` at ``revision`` (default: its main branch), downloaded when not cached
    (only the files matching ``patterns``). ``what`` names the setting in error messages."""
    local = Path(base_dir) / model
    if local.is_dir():
        if revision:
            raise MtbiError(f"{what} '{model}' is a local dir, so revision '{revision}' cannot apply; "
                            "remove revision or name a hub id")
        return ResolvedModel(local.resolve())
    if not is_hub_id(model):
        raise MtbiError(f"{what} '{model}': no such local dir ({local.resolve()}), and not a hub id "
                        "(owner/name); fix the path or name a Hugging Face model id")
    path = _snapshot(model, revision, what, patterns)
    return ResolvedModel(path, model, path.name)


def _snapshot(repo_id: str, revision: str | None, what: str, patterns: list[str]) -> Path:
    """``snapshot_download`` with its failures turned into one-line errors that say what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except GatedRepoError:
        raise MtbiError(f"{what} '{at}' is a gated hub repo: accept its terms on huggingface.co and log in "
                        "(hf auth login, or set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise MtbiError(f"{what} '{at}': no such hub repo, or it is private (log in with hf auth login, "
                        "or set HF_TOKEN); a local dir of that name does not exist either") from None
    except RevisionNotFoundError:
        raise MtbiError(f"{what} '{at}': the hub repo has no revision '{revision}'; name a branch, tag "
                        "or commit of it") from None
    except LocalEntryNotFoundError:
        raise MtbiError(f"{what} '{at}' is not in the hub cache {HF_HUB_CACHE} and the hub cannot be "
                        "reached (HF_HUB_OFFLINE=1 or no network); download it where there is network "
                        f"(hf download {repo_id}) into the cache HF_HOME points to") from None
    except HfHubHTTPError as err:
        raise MtbiError(f"{what} '{at}': the hub failed ({str(err).splitlines()[0]}); run the stage again "
                        f"later: the files downloaded so far are kept in {HF_HUB_CACHE}") from None
