"""The task bank and its deterministic split into seen/unseen prompts and train/held-out tasks."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from mtbi.config import from_dict, load_config
from mtbi.errors import MtbiError

DEFAULT_BANK = Path(__file__).with_name("task_bank.yaml")
TRANSCRIPT_SLOT = "{transcript}"
SCORERS = ("wer", "exact_match")
MIN_PROMPTS = 6


@dataclass(frozen=True)
class Task:
    """A task: its family, prompt paraphrases (each with one ``{transcript}`` slot), scorer,
    and the mini-corpus rule giving its right answer (None: no rule)."""

    family: str
    scorer: str
    prompts: list[str]
    rule: str | None = None


@dataclass(frozen=True)
class TaskConfig:
    """``conf/tasks.yaml``: which bank, and how it is split."""

    bank: str | None = None  # path of a task bank YAML; None: mtbi's default bank
    heldout_tasks: list[str] = field(default_factory=lambda: ["qa_place", "sentiment", "keywords", "reverse_words",
                                                              "first_letters"])
    unseen_prompts_per_task: int = 2
    split_seed: int = 0


class TaskBank:
    """Tasks by name, with the split: ``train_tasks``/``heldout_tasks`` and, per task,
    seen prompts (used in training) and unseen prompts (benchmark only)."""

    def __init__(self, tasks: dict[str, Task], config: TaskConfig, source: str) -> None:
        self.tasks = tasks
        self.config = config
        for name, task in tasks.items():
            _check_task(name, task, source)
        unknown = [t for t in config.heldout_tasks if t not in tasks]
        if unknown:
            raise MtbiError(f"held-out task '{unknown[0]}' is not in the task bank {source}; "
                            f"tasks: {', '.join(tasks)}")
        self.heldout_tasks = [t for t in tasks if t in config.heldout_tasks]
        self.train_tasks = [t for t in tasks if t not in config.heldout_tasks]
        self._unseen: dict[str, set[int]] = {}
        for name, task in tasks.items():
            if not 0 <= config.unseen_prompts_per_task < len(task.prompts):
                raise MtbiError(f"unseen_prompts_per_task={config.unseen_prompts_per_task} leaves no "
                                f"seen prompt for task '{name}' ({len(task.prompts)} prompts)")
            rng = random.Random(f"{config.split_seed}:{name}")
            self._unseen[name] = set(rng.sample(range(len(task.prompts)), config.unseen_prompts_per_task))

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise MtbiError(f"task '{name}' is not in the task bank; tasks: {', '.join(self.tasks)}")
        return self.tasks[name]

    def prompt_ids(self, name: str, which: str = "all") -> list[str]:
        """Prompt ids ``<task>/<index>`` of ``which`` prompts: ``seen``, ``unseen`` or ``all``."""
        if which not in ("seen", "unseen", "all"):
            raise MtbiError(f"prompt set '{which}': use seen, unseen or all")
        prompts = self.task(name).prompts
        unseen = self._unseen[name]
        return [f"{name}/{i}" for i in range(len(prompts))
                if which == "all" or (i in unseen) == (which == "unseen")]

    def prompt(self, prompt_id: str) -> str:
        """The prompt text of ``<task>/<index>``."""
        name, _, index = prompt_id.rpartition("/")
        prompts = self.task(name).prompts
        if not index.isdigit() or int(index) >= len(prompts):
            raise MtbiError(f"prompt id '{prompt_id}' does not exist; task '{name}' has prompts "
                            f"0..{len(prompts) - 1}")
        return prompts[int(index)]

    def select_tasks(self, which: str) -> list[str]:
        """Task names for ``train``, ``heldout``, ``all`` or a comma-separated list of names."""
        if which == "train":
            return list(self.train_tasks)
        if which == "heldout":
            return list(self.heldout_tasks)
        if which == "all":
            return list(self.tasks)
        names = [n for n in which.split(",") if n]
        for name in names:
            self.task(name)
        return names


def load_task_bank(task_conf: str | Path | None = None, overrides: Sequence[str] = ()) -> TaskBank:
    """Read ``conf/tasks.yaml`` (or the defaults when None), with dotted ``overrides``, and the
    bank it names."""
    config = load_config(task_conf or None, TaskConfig, overrides)
    bank_path = Path(config.bank) if config.bank else DEFAULT_BANK
    if not bank_path.is_file():
        raise MtbiError(f"{bank_path}: task bank not found (bank: in {task_conf})")
    with open(bank_path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if set(raw) != {"tasks"} or not isinstance(raw["tasks"], dict):
        raise MtbiError(f"{bank_path}: expected one top-level key 'tasks' mapping names to tasks")
    tasks = {name: from_dict(Task, spec, f"{bank_path}: task {name}") for name, spec in raw["tasks"].items()}
    return TaskBank(tasks, config, str(bank_path))


def _check_task(name: str, task: Task, source: str) -> None:
    if task.scorer not in SCORERS:
        raise MtbiError(f"{source}: task {name}: unknown scorer '{task.scorer}'; use {', '.join(SCORERS)}")
    if len(task.prompts) < MIN_PROMPTS:
        raise MtbiError(f"{source}: task {name}: {len(task.prompts)} prompts; give at least {MIN_PROMPTS}")
    for i, prompt in enumerate(task.prompts):
        if prompt.count(TRANSCRIPT_SLOT) != 1:
            raise MtbiError(f"{source}: task {name}, prompt {i} must contain {TRANSCRIPT_SLOT} "
                            f"exactly once: '{prompt}'")
