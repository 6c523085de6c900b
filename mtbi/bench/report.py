"""Stage 8 reports: one system's RESULTS.md and bar chart, and the comparison of systems
(the recipe's baseline table, its intervals and paired tests, and its chart)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from mtbi.bench.intervals import METRICS, SPLITS, Interval, SplitFidelity, seed_spread
from mtbi.errors import MtbiError
from mtbi.stage import atomic_write
from mtbi.tasks.records import record_key


@dataclass(frozen=True)
class SystemRuns:
    """A system's scores.json, one per training seed (one for the teacher), and how long each
    run trained (steps and mean seconds: None for the teacher)."""

    name: str
    scores: list[dict]
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

    for split, title in SPLITS.items():
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


def spread_cell(spread: tuple[float, float | None] | None, scale: float, digits: int) -> str:
    """``mean ± std`` (``mean`` alone for one seed, ``-`` for none), scaled and rounded."""
    if spread is None:
        return "-"
    mean, std = spread
    return f"{mean * scale:.{digits}f}" + ("" if std is None else f" ± {std * scale:.{digits}f}")


def difference_cell(vs_reference: tuple[Interval, float], num: int, scale: float, digits: int) -> str:
    """A paired test's ``difference [interval], p``, scaled and rounded (``num`` resamples)."""
    diff, p = vs_reference
    p_text = f"p<{1 / num:.2g}" if p == 0 else f"p={p:.3g}"  # no resample on the other side
    return (f"{diff.mean * scale:+.{digits}f} [{diff.low * scale:+.{digits}f}, {diff.high * scale:+.{digits}f}], "
            f"{p_text}")


def metric_format(metric: str) -> tuple[float, int]:
    """Scale and digits of a fidelity metric's cells: exact match in %, the others 0-1."""
    return (100.0, 1) if metric == "exact_match" else (1.0, 3)


def _heldout(scores: dict, key: str) -> float | None:
    return (scores["task_generalization"].get("heldout") or {}).get(key)


def comparison_markdown(systems: list[SystemRuns], fidelity: dict[str, dict[str, SplitFidelity]], metric: str,
                        test_set: str) -> str:
    """One row per system: fidelity (``metric``) on each split, held-out accuracy and task
    following, WER (each mean ± std over seeds), training steps and time per run."""
    scale, digits = metric_format(metric)
    unit = " %" if metric == "exact_match" else ""
    lines = [f"Benchmark on `{test_set}`: fidelity to the teacher's text answers ({METRICS[metric]}{unit}) per split, "
             "held-out task accuracy against the task's reference, held-out task following (answers that do the task "
             "rather than transcribe the input) and transcription WER; mean ± std over the seeds (training runs). "
             "Intervals and paired tests are in the tables below.", "",
             f"| system | input | seeds | {' | '.join(SPLITS.values())} | held-out accuracy % "
             "| held-out task following % | WER % | steps | train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for system in systems:
        splits = fidelity.get(system.name, {})
        cells = [spread_cell(splits[s].spread if s in splits else None, scale, digits) for s in SPLITS]
        cells += [spread_cell(seed_spread([_heldout(sc, key) for sc in system.scores]), 100, 1)
                  for key in ("task_accuracy", "task_following")]
        cells.append(spread_cell(seed_spread([sc["wer"] for sc in system.scores]), 100, 1))
        time = "-" if system.train_seconds is None else f"{system.train_seconds / 60:.1f} min"
        lines.append(f"| {system.name} | {system.scores[0]['input']} | {len(system.scores)} | {' | '.join(cells)} | "
                     f"{system.steps if system.steps is not None else '-'} | {time} |")
    return "\n".join(lines) + "\n"


def fidelity_markdown(fidelity: dict[str, dict[str, SplitFidelity]], metric: str, reference: str, num: int) -> str:
    """Per split: each system's fidelity (mean ± std over seeds [95% bootstrap interval over
    items, seeds pooled], items) and ``reference`` minus it on the same items (interval, paired
    bootstrap p)."""
    scale, digits = metric_format(metric)
    unit = ", %" if metric == "exact_match" else ", 0-1"
    lines = [f"Fidelity to the teacher ({METRICS[metric]}{unit}): mean ± std over seeds [95% bootstrap interval over "
             f"items, each item averaged over the seeds] (items); {reference} minus the system on the same items "
             f"[interval], paired bootstrap p ({num} resamples)", "",
             "| system | " + " | ".join(f"{title} | {reference} - system" for title in SPLITS.values()) + " |",
             "|---|" + "---|---|" * len(SPLITS)]
    for name, splits in fidelity.items():
        cells = []
        for split in SPLITS:
            if split not in splits:
                cells += ["-", "-"]
                continue
            f = splits[split]
            cells.append(f"{spread_cell(f.spread, scale, digits)} "
                         f"[{f.items.low * scale:.{digits}f}, {f.items.high * scale:.{digits}f}] (n={f.num_items})")
            cells.append("-" if f.vs_reference is None else difference_cell(f.vs_reference, num, scale, digits))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_json(systems: list[SystemRuns], fidelity: dict[str, dict[str, dict[str, SplitFidelity]]],
                    headline: str, reference: str, test_set: str, num: int) -> dict:
    """The comparison as data: per system its seeds, each score's mean ± std over seeds and
    per-seed values, and per fidelity metric and split the intervals and paired tests."""
    def spread(values: list[float | None]) -> dict:
        out = seed_spread(values)
        return {"mean": None if out is None else out[0], "std": None if out is None else out[1], "per_seed": values}

    return {"test_set": test_set, "headline_metric": headline, "reference": reference, "resamples": num,
            "systems": {s.name: {"input": s.scores[0]["input"], "seeds": len(s.scores), "steps": s.steps,
                                 "train_seconds": s.train_seconds,
                                 "heldout_task_accuracy": spread([_heldout(sc, "task_accuracy") for sc in s.scores]),
                                 "heldout_task_following": spread([_heldout(sc, "task_following") for sc in s.scores]),
                                 "wer": spread([sc["wer"] for sc in s.scores]),
                                 "fidelity": {metric: {split: f.to_json() for split, f in by_metric[s.name].items()}
                                              for metric, by_metric in fidelity.items()}}
                        for s in systems}}


def samples_markdown(hyps: dict[str, list[dict]], per_split: int, seed: int = 0) -> str:
    """Every system's answer to the same benchmark questions: ``per_split`` questions (of
    distinct tasks, drawn with ``seed``) of each split, seen prompts, unseen prompts and held-out
    tasks. ``hyps``: system name -> its hyp.jsonl records, the teacher on text first."""
    rng = random.Random(seed)
    answers = {name: {record_key(r): r["hyp"] for r in records} for name, records in hyps.items()}
    questions = sorted(next(iter(hyps.values())), key=record_key)
    lines = []
    for split, title in SPLITS.items():
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
    splits = [s for s in SPLITS if any(s in scores["per_task"][t] for t in tasks)]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks) + 2), 3.5))
    width = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        values = [_fidelity(scores["per_task"][t].get(split), "exact_match", 100) or 0.0 for t in tasks]
        ax.bar([i + k * width for i in range(len(tasks))], values, width, label=SPLITS[split])
    ax.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(tasks))], tasks, rotation=45, ha="right")
    ax.set_ylabel("fidelity exact match %")
    ax.set_ylim(0, 100)
    ax.set_title(name)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def plot_comparison(fidelity: dict[str, dict[str, SplitFidelity]], metric: str, png: str | Path) -> None:
    """Grouped bars: each system's fidelity (``metric``) on seen prompts, unseen prompts and
    held-out tasks, with its 95% bootstrap interval over items (seeds pooled) as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, _ = metric_format(metric)
    names = list(fidelity)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 3.5))
    width = 0.8 / len(SPLITS)
    for k, (split, title) in enumerate(SPLITS.items()):
        groups = [fidelity[name].get(split) for name in names]
        means = [0.0 if g is None else g.items.mean * scale for g in groups]
        errors = [[0.0 if g is None else (g.items.mean - g.items.low) * scale for g in groups],
                  [0.0 if g is None else (g.items.high - g.items.mean) * scale for g in groups]]
        ax.bar([i + k * width for i in range(len(names))], means, width, yerr=errors, capsize=2, label=title)
    ax.set_xticks([i + width for i in range(len(names))], names)
    ax.set_ylabel(f"fidelity, {METRICS[metric]}" + (" %" if metric == "exact_match" else ""))
    ax.set_ylim(0, scale)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def read_scores(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path} is missing; it is made by stage 8 (mtbi.bin.score)")
    return json.loads(path.read_text(encoding="utf-8"))


def replace_marked_section(markdown: str | Path, marker: str, text: str) -> None:
    """Put ``text`` between ``<!-- <marker>:begin -->`` and ``<!-- <marker>:end -->`` of
    the file ``markdown`` (the pair is appended when absent)."""
    markdown = Path(markdown)
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    old = markdown.read_text(encoding="utf-8") if markdown.is_file() else ""
    block = f"{begin}\n{text}{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    elif begin in old or end in old:
        raise MtbiError(f"{markdown} has only one of the markers {begin} / {end}; fix it by hand")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    with atomic_write(markdown) as f:
        f.write(new)
