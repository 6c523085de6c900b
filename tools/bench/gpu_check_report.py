#!/usr/bin/env python3
"""The GPU check's table: merges the JSON of ``gpu_check.py measure`` and ``gpu_check.py ddp``
into one file and prints one table (tools/gpu_check.sh calls it last). Standard library only,
so that it starts at once.

    python tools/bench/gpu_check_report.py measure.json ddp.json --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HEADER = ("measurement", "time", "throughput", "MFU vs matmul", "peak GiB")


def number(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def row(result: dict[str, Any], time_text: str, rate: str, mfu: str) -> tuple[str, ...]:
    """A measurement's row; a failed one shows its error instead of figures."""
    memory = number(result.get("peak_memory_gib"), ".1f")
    if "error" in result:
        return result["name"], result["error"], "", "", memory
    return result["name"], time_text, rate, mfu, memory


def table(results: dict[str, Any]) -> str:
    """The human-readable summary of the merged results."""
    matmul, ddp = results["matmul"], results["ddp"]
    rows = [HEADER, row({**matmul, "name": matmul["name"] + " (baseline)"}, number(matmul.get("seconds"), ".3g", " s"),
                        number(matmul.get("tflops"), ".3g", " TFLOP/s"), "1")]
    rows += [row(r, number(r.get("step_seconds"), ".3g", " s/step"), number(r.get("tflops"), ".3g", " TFLOP/s"),
                 number(r.get("mfu_vs_matmul"), ".3f")) for r in results["train"]]
    rows += [row(r, number(r.get("seconds"), ".3g", " s/batch"), number(r.get("answers_per_s"), ".3g", " answers/s"),
                 "-") for r in results["generate"]]
    rows.append(row({**ddp, "name": f"{ddp['name']} ({ddp.get('backend', '?')}, world size {ddp.get('world_size', '?')})"},
                    number(ddp.get("ddp_step_seconds"), ".3g", " s/step"),
                    number(ddp.get("ddp_over_plain"), ".3f", " x plain step"), "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows]
    notes = [f"GPU check on {results['device']} ({results['dtype']} random-init weights; torch {results['torch']}, "
             f"transformers {results['transformers']})",
             "MFU: the training step's model FLOPs per second over the matmul measured in this run "
             "(FLOP formula: tools/bench/gpu_check.py)"]
    if results["nominal_peak_tflops"]:
        against = ", ".join(f"{r['llm']} {r['mfu_vs_nominal_peak']:.3f}" for r in results["train"] if "error" not in r)
        notes.append(f"reference only: nominal dense bf16 peak {results['nominal_peak_tflops']:.0f} TFLOP/s "
                     f"(MFU against it: {against or '-'})")
    return "\n".join(notes + [""] + lines)


def merge(measure_json: Path, ddp_json: Path) -> dict[str, Any]:
    """The measurements with the DDP result under ``ddp`` (an error when it wrote none)."""
    results = json.loads(measure_json.read_text(encoding="utf-8"))
    results["ddp"] = (json.loads(ddp_json.read_text(encoding="utf-8")) if ddp_json.is_file()
                      else {"name": "ddp", "error": "did not finish (its output is above)"})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("measure_json", type=Path)
    parser.add_argument("ddp_json", type=Path, help="may be missing: the DDP check is then reported as failed")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = merge(args.measure_json, args.ddp_json)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(table(results), flush=True)


if __name__ == "__main__":
    main()
