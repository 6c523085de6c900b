"""Stage 8 reports: one system's RESULTS.md and bar chart, and the comparison of systems
(the recipe's baseline table and its chart)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from mtbi.errors import MtbiError
from mtbi.stage import atomic_write
from mtbi.tasks.targets import record_key

SPLIT_TITLES = {"seen": "seen prompts", "unseen": "unseen prompts", "heldout": "held-out tasks"}


@dataclass(frozen=True)
class SystemResult:
    """A system's scores and how it was trained (steps and seconds: None for the teacher)."""

    name: str
    scores: dict
    steps: int | None = None
    train_seconds: float | None = None


def _split(scores: dict, split: str) -> dict | None:
    return scores["prompt_generalization"].get(split) or scores["task_generalization"].get(split)


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _fidelity(group: dict | None, key: str, scale: float) -> float | None:
    return None if group is None or "fidelity" not in group else (group["fidelity"][key] or 0.0) * scale


def system_markdown(name: str, scores: dict) -> str:
    """RESULTS.md of one system: the splits, then every task."""
    lines = [f"# {name}: benchmark results ({scores['input']} input, {scores['num_items']} items)", "",
             "Fidelity = agreement with the teacher's answer to the transcript; task accuracy / WER = "
             "against the task's reference; task following = answers that are not a mere transcription.", "",
             "| split | items | fidelity EM % | BLEU | ROUGE-L | task accuracy % | WER % | task following % |",
             "|---|---|---|---|---|---|---|---|"]

    def row(title: str, g: dict) -> str:
        f = g.get("fidelity", {})
        return (f"| {title} | {g['n']} | {_fmt(f.get('exact_match'), 100)} | {_fmt(f.get('bleu'))} | "
                f"{_fmt(f.get('rouge_l'), 1, 3)} | {_fmt(g['task_accuracy'], 100)} | {_fmt(g['wer'], 100)} | "
                f"{_fmt(g['task_following'], 100)} |")

    for split, title in SPLIT_TITLES.items():
        group = _split(scores, split)
        if group:
            lines.append(row(title, group))
    lines += ["", "## Per task", "",
              "| task | split | items | fidelity EM % | BLEU | ROUGE-L | task accuracy % | WER % | task following % |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task, splits in scores["per_task"].items():
        for split, group in splits.items():
            lines.append(row(f"{task} | {split}", group))
    return "\n".join(lines) + "\n"


def comparison_markdown(results: list[SystemResult], test_set: str) -> str:
    """One row per system: prompt and task generalization, WER, training steps and time."""
    lines = [f"Benchmark on `{test_set}` (fidelity to the teacher's text answers: exact match % / ROUGE-L; "
             "held-out task accuracy against the task's reference; task following = not a transcription)", "",
             "| system | input | seen prompts EM / R-L | unseen prompts EM / R-L | held-out tasks EM / R-L "
             "| held-out accuracy % | held-out task following % | WER % | steps | train time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cells = []
        for split in ("seen", "unseen", "heldout"):
            g = _split(r.scores, split)
            cells.append(f"{_fmt(_fidelity(g, 'exact_match', 100))} / {_fmt(_fidelity(g, 'rouge_l', 1), 1, 3)}")
        held = _split(r.scores, "heldout") or {}
        time = "-" if r.train_seconds is None else f"{r.train_seconds / 60:.1f} min"
        lines.append(f"| {r.name} | {r.scores['input']} | {' | '.join(cells)} | "
                     f"{_fmt(held.get('task_accuracy'), 100)} | {_fmt(held.get('task_following'), 100)} | "
                     f"{_fmt(r.scores['wer'], 100)} | {r.steps if r.steps is not None else '-'} | {time} |")
    return "\n".join(lines) + "\n"


def samples_markdown(hyps: dict[str, list[dict]], per_split: int, seed: int = 0) -> str:
    """Every system's answer to the same benchmark questions: ``per_split`` questions (of
    distinct tasks, drawn with ``seed``) of each split, seen prompts, unseen prompts and held-out
    tasks. ``hyps``: system name -> its hyp.jsonl records, the teacher on text first."""
    rng = random.Random(seed)
    answers = {name: {record_key(r): r["hyp"] for r in records} for name, records in hyps.items()}
    questions = sorted(next(iter(hyps.values())), key=record_key)
    lines = []
    for split, title in SPLIT_TITLES.items():
        candidates = [r for r in questions if r["split"] == split]
        rng.shuffle(candidates)
        chosen: dict[str, dict] = {}
        for record in candidates:
            chosen.setdefault(record["task"], record)
            if len(chosen) == per_split:
                break
        for record in chosen.values():
            prompt = record["prompt"].replace("{transcript}", f"[{record['transcript']}]")
            lines += [f"{title}, `{record['task']}`: {_cell(prompt)}", "", "| system | answer |", "|---|---|"]
            lines += [f"| {name} | {_cell(answers[name].get(record_key(record), '(no answer)'))} |" for name in answers]
            lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """``text`` on one line, safe in a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or "(empty)"


def plot_system(name: str, scores: dict, png: str | Path) -> None:
    """Bar chart of the fidelity exact match of every task, one bar per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(scores["per_task"])
    splits = [s for s in SPLIT_TITLES if any(s in scores["per_task"][t] for t in tasks)]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks) + 2), 3.5))
    width = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        values = [_fidelity(scores["per_task"][t].get(split), "exact_match", 100) or 0.0 for t in tasks]
        ax.bar([i + k * width for i in range(len(tasks))], values, width, label=SPLIT_TITLES[split])
    ax.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(tasks))], tasks, rotation=45, ha="right")
    ax.set_ylabel("fidelity exact match %")
    ax.set_ylim(0, 100)
    ax.set_title(name)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def plot_comparison(results: list[SystemResult], png: str | Path) -> None:
    """Grouped bars: each system's fidelity exact match on seen prompts, unseen prompts and
    held-out tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(results) + 2), 3.5))
    width = 0.8 / len(SPLIT_TITLES)
    for k, (split, title) in enumerate(SPLIT_TITLES.items()):
        values = [_fidelity(_split(r.scores, split), "exact_match", 100) or 0.0 for r in results]
        ax.bar([i + k * width for i in range(len(results))], values, width, label=title)
    ax.set_xticks([i + width for i in range(len(results))], [r.name for r in results])
    ax.set_ylabel("fidelity exact match %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def read_scores(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path} is missing; it is made by stage 8 (mtbi.bin.score)")
    return json.loads(path.read_text(encoding="utf-8"))


def replace_marked_section(readme: str | Path, marker: str, text: str) -> None:
    """Put ``text`` between ``<!-- <marker>:begin -->`` and ``<!-- <marker>:end -->`` of
    ``readme`` (the pair is appended when absent)."""
    readme = Path(readme)
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    old = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    block = f"{begin}\n{text}{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    elif begin in old or end in old:
        raise MtbiError(f"{readme} has only one of the markers {begin} / {end}; fix it by hand")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    with atomic_write(readme) as f:
        f.write(new)
