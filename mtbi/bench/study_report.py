"""The study's report (mtbi.bin.study): each claim of mtbi.bench.study as a markdown section and
JSON, and the plots of fidelity by training share and by checkpoint step."""

from __future__ import annotations

from pathlib import Path

from mtbi.bench.intervals import METRICS, SplitFidelity
from mtbi.bench.report import difference_cell, metric_format, spread_cell
from mtbi.bench.study import CLAIM_SPLITS, ClaimRow, CurveResults, ShareResults
from mtbi.run_names import PRIOR_METHODS, REFERENCE


def _row(metric: str, row: ClaimRow, num: int) -> str:
    return (f"| {REFERENCE} - {row.system} | {CLAIM_SPLITS[row.split]} | "
            f"{difference_cell(row.fidelity.vs_reference, num, *metric_format(metric))} | {row.verdict} |")


def _cell(metric: str, f: SplitFidelity | None) -> str:
    return "-" if f is None else spread_cell(f.spread, *metric_format(metric))


def _row_json(row: ClaimRow) -> dict:
    diff, p = row.fidelity.vs_reference
    return {"system": row.system, "split": row.split, "diff": diff.mean, "interval": [diff.low, diff.high],
            "p": p, "verdict": row.verdict, "seeds": len(row.fidelity.per_seed)}


def generalization_section(rows: list[ClaimRow], metric: str, num: int) -> tuple[str, dict]:
    """Claim a's markdown and JSON."""
    lines = ["### a. MTBI generalizes better than ASR-only SFT and BLSP", "",
             f"Fidelity ({METRICS[metric]}) of MTBI minus each baseline on the same items, seeds pooled: "
             "[95% bootstrap interval], paired bootstrap p.", "",
             "| comparison | split | difference [interval], p | verdict |", "|---|---|---|---|"]
    lines += [_row(metric, r, num) for r in rows]
    return "\n".join(lines) + "\n", {"rows": [_row_json(r) for r in rows]}


def share_section(results: ShareResults, metric: str, num: int) -> tuple[str, dict]:
    """Claim b's markdown and JSON."""
    table = ["### b. MTBI needs less supervised speech data", "",
             f"Fidelity ({METRICS[metric]}, mean ± std over seeds) by the share of the training utterances "
             "each system was trained on (the same utterances for every system and seed), and MTBI minus the "
             "others at the same share.", "",
             "| system | share | seeds | " + " | ".join(CLAIM_SPLITS.values()) + " |", "|---|---|---|---|---|"]
    for share in sorted({s for by_share in results.seeds.values() for s in by_share}):
        for tag in (t for t in (REFERENCE, *PRIOR_METHODS) if share in results.seeds.get(t, {})):
            table.append(f"| {tag} | {share:.0%} | {results.seeds[tag][share]} | "
                         + " | ".join(_cell(metric, results.points[tag][share].get(s)) for s in CLAIM_SPLITS) + " |")
    table += ["", "| share | comparison | split | difference [interval], p | verdict |", "|---|---|---|---|---|"]
    table += [f"| {share:.0%} " + _row(metric, r, num) for share, r in results.rows]
    reach = [f"- {CLAIM_SPLITS[split]}: MTBI reaches {base}'s score with all the data "
             + (f"from {share:.0%} of the utterances" if share is not None else "at no share measured")
             for base, split, share in results.reach]
    data = {"points": {t: {str(s): {k: (None if f is None else f.to_json()) for k, f in v.items()}
                           for s, v in by_share.items()} for t, by_share in results.points.items()},
            "rows": [{"share": s, **_row_json(r)} for s, r in results.rows]}
    return "\n".join(table + [""] + reach) + "\n", data


def curve_section(results: CurveResults, metric: str, num: int) -> tuple[str, dict]:
    """Claim c's markdown and JSON."""
    tags, steps = list(results.curves), results.steps
    table = ["### c. Interleaving makes alignment more efficient", "",
             f"Fidelity ({METRICS[metric]}, mean ± std over seeds) at each checkpoint, and "
             "MTBI minus each system at the same step (negative: the system is ahead).", "",
             "| system | step | " + " | ".join(CLAIM_SPLITS.values()) + " | " +
             " | ".join(f"mtbi - system, {t}" for t in CLAIM_SPLITS.values()) + " |", "|---|---|---|---|---|---|"]
    for step in steps:
        for tag in tags:
            at = results.curves[tag][step]
            diffs = ["-" if at.get(s) is None or at[s].vs_reference is None
                     else difference_cell(at[s].vs_reference, num, *metric_format(metric)) for s in CLAIM_SPLITS]
            table.append(f"| {tag} | {step} | " + " | ".join(_cell(metric, at.get(s)) for s in CLAIM_SPLITS)
                         + " | " + " | ".join(diffs) + " |")
    lines = table + ["", f"Steps to reach {results.reach:.0%} of MTBI's score at step {steps[-1]} (the first checkpoint "
                         "whose mean reaches it; - : none):", "", "| system | " + " | ".join(CLAIM_SPLITS.values()) + " |",
                     "|---|---|---|"]
    lines += [f"| {tag} | " + " | ".join("-" if results.reached[tag][s] is None else str(results.reached[tag][s])
                                         for s in CLAIM_SPLITS) + " |" for tag in tags]
    lines += ["", "Verdicts of each system against MTBI at equal steps (the claim: interleaving is ahead):", "",
              "| system | step | " + " | ".join(CLAIM_SPLITS.values()) + " |", "|---|---|---|---|"]
    by_row = {(s, r.system, r.split): r.verdict for s, r in results.verdicts}
    lines += [f"| {tag} | {step} | " + " | ".join(by_row.get((step, tag, split), "-") for split in CLAIM_SPLITS) + " |"
              for tag in tags if tag != REFERENCE for step in steps]
    series = {t: {str(s): {k: f.to_json() for k, f in by_split.items()} for s, by_split in c.items()}
              for t, c in results.curves.items()}
    return "\n".join(lines) + "\n", {"steps_to_reach": results.reached, "points": series,
                                     "rows": [{"step": s, **_row_json(r)} for s, r in results.verdicts]}


def plot_study(data_points: dict, curves: dict, metric: str, out: Path) -> None:
    """``<out>_data.png``: fidelity by training share; ``<out>_curves.png``: by checkpoint step;
    one panel per claim split, error bars: the standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, _ = metric_format(metric)
    for suffix, series, xlabel in (("_data", data_points, "share of the training utterances"),
                                   ("_curves", curves, "training step")):
        fig, axes = plt.subplots(1, len(CLAIM_SPLITS), figsize=(10, 3.5), squeeze=False)
        for ax, (split, title) in zip(axes[0], CLAIM_SPLITS.items()):
            for tag, by_x in series.items():
                xs = [x for x in sorted(by_x) if by_x[x].get(split) is not None]
                means = [by_x[x][split].items.mean * scale for x in xs]
                stds = [(by_x[x][split].std or 0.0) * scale for x in xs]
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=2, label=tag)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"fidelity, {METRICS[metric]}")
        axes[0][-1].legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out.parent / f"{out.name}{suffix}.png", dpi=100)
        plt.close(fig)
