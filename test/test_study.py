"""The study's verdicts (mtbi.bench.study, mtbi.bin.study) on hand-made answers of known scores."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from mtbi.bench.intervals import Interval, SplitFidelity
from mtbi.bench.study import collect_runs, steps_to_reach, verdict


def test_verdicts_need_the_claimed_sign_and_a_small_p() -> None:
    assert verdict(0.1, 0.001) == "holds"
    assert verdict(-0.1, 0.001) == "does not hold"
    assert verdict(0.1, 0.2) == verdict(-0.1, 0.2) == "undecided"
    assert verdict(-0.1, 0.001, claimed_positive=False) == "holds"


def test_steps_to_reach_is_the_first_checkpoint_at_the_target() -> None:
    def at(mean: float) -> SplitFidelity:
        return SplitFidelity((mean,), Interval(mean, mean, mean), 10)

    curve = {100: at(0.2), 200: at(0.5), 300: at(0.45), 400: at(0.7)}
    assert steps_to_reach(curve, 0.45) == 200
    assert steps_to_reach(curve, 0.7) == 400
    assert steps_to_reach(curve, 0.8) is None


def _hyps(answers: list[str], input_: str = "speech") -> str:
    splits = ["unseen", "heldout"]
    return "".join(json.dumps({"utt": f"u{n}", "task": "summary" if n % 2 == 0 else "keywords",
                               "prompt_id": f"p{n}", "split": splits[n % 2], "input": input_, "hyp": a,
                               "ref": None, "prompt": "p {transcript}", "transcript": "t"}) + "\n"
                   for n, a in enumerate(answers))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_study_report_gives_each_claim_its_verdict(tmp_path: Path) -> None:
    """mtbi answers every item right, asr_sft none, blsp half, so claim a holds against both;
    trained on 10% of the data mtbi still beats both baselines trained on all of it; at step 100
    mtbi_interleave is ahead of mtbi (claim c holds there), at step 200 level (undecided)."""
    n = 200
    right = [f"answer {k}" for k in range(n)]
    half = [a if k % 4 < 2 else "no" for k, a in enumerate(right)]
    exp = tmp_path / "exp"
    _write(exp / "teacher_text" / "bench_test" / "hyp.jsonl", _hyps(right, "text"))
    for run, answers in (("sllm_mtbi", right), ("sllm_mtbi_seed1", right), ("sllm_asr_sft", ["no"] * n),
                         ("sllm_blsp", half), ("sllm_mtbi_frac10", half), ("sllm_asr_sft_frac10", ["no"] * n),
                         ("sllm_blsp_frac10", ["no"] * n)):
        _write(exp / run / "bench_test" / "hyp.jsonl", _hyps(answers))
    # checkpoints at steps 100 and 200; the final weights (step 200) answered bench_test/hyp.jsonl
    _write(exp / "sllm_mtbi_interleave" / "bench_test" / "hyp.jsonl", _hyps(right))
    for run, answers in (("sllm_mtbi", ["no"] * n), ("sllm_mtbi_interleave", half)):
        _write(exp / run / "bench_test" / "checkpoints" / "step_0000100" / "hyp.jsonl", _hyps(answers))
        for step in (100, 200):
            (exp / run / "checkpoints" / f"step_{step:07d}").mkdir(parents=True)
    runs = collect_runs(exp, "test")
    assert set(runs.final) == {"mtbi", "asr_sft", "blsp", "mtbi_interleave"} and len(runs.final["mtbi"][1.0]) == 2
    assert set(runs.final["mtbi"]) == {0.1, 1.0} and set(runs.curves["mtbi_interleave"]) == {100, 200}
    assert len(runs.curves["mtbi"][200]) == 1  # the seed without checkpoint answers has no curve

    out = tmp_path / "study" / "study"
    results_md = tmp_path / "RESULTS.md"
    result = subprocess.run([sys.executable, "-m", "mtbi.bin.study", "--exp_dir", str(exp), "--test_set", "test",
                             "--teacher_hyp", str(exp / "teacher_text" / "bench_test" / "hyp.jsonl"),
                             "--metric", "exact_match", "--resamples", "500", "--out", str(out),
                             "--markdown", str(results_md), "--made_by", "local/run_study.sh"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert {(r["system"], r["split"], r["verdict"]) for r in data["generalization"]["rows"]} == {
        ("asr_sft", "unseen", "holds"), ("asr_sft", "heldout", "holds"),
        ("blsp", "unseen", "holds"), ("blsp", "heldout", "holds")}
    at_10 = {(r["system"], r["split"]): r for r in data["data"]["rows"] if r["share"] == 0.1}
    assert at_10[("asr_sft", "unseen")]["diff"] == 0.5 and at_10[("asr_sft", "unseen")]["verdict"] == "holds"
    assert "MTBI reaches asr_sft's score with all the data from 10% of the utterances" in result.stdout
    curve = {(r["step"], r["split"]): r["verdict"] for r in data["curves"]["rows"]}
    assert curve[(100, "unseen")] == "holds" and curve[(200, "unseen")] == "undecided"
    assert data["curves"]["steps_to_reach"]["mtbi_interleave"]["unseen"] == 200
    assert (tmp_path / "study" / "study_data.png").is_file() and (tmp_path / "study" / "study_curves.png").is_file()
    assert "<!-- study:test:begin -->" in results_md.read_text() and result.stdout in results_md.read_text()
    # stamped with the command; no run here has an env.txt, so the study's own environment
    assert result.stdout.startswith(f"Made {date.today().isoformat()} by `local/run_study.sh` made at mtbi commit ")
