"""Bootstrap intervals and paired tests over benchmark items, on values whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from mtbi.bench.intervals import bootstrap_interval, fidelity_table, item_fidelity, paired_bootstrap
from mtbi.bench.metrics import chrf, rouge_l_f1


def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation() -> None:
    constant = bootstrap_interval(np.full(20, 0.5))
    assert (constant.mean, constant.low, constant.high) == (0.5, 0.5, 0.5)
    coin = bootstrap_interval(np.array([0.0, 1.0] * 200), num=4000)
    half_width = 1.96 * 0.5 / np.sqrt(400)  # 0.049
    assert coin.mean == 0.5
    assert coin.low == pytest.approx(0.5 - half_width, abs=0.01)
    assert coin.high == pytest.approx(0.5 + half_width, abs=0.01)
    assert bootstrap_interval(np.array([0.0, 1.0] * 200), seed=1) != bootstrap_interval(np.array([0.0, 1.0] * 200), seed=2)


def test_paired_bootstrap_finds_a_shift_and_no_difference() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(size=300)
    same, p_same = paired_bootstrap(b, b)
    assert (same.mean, same.low, same.high, p_same) == (0.0, 0.0, 0.0, 1.0)
    shifted, p_shifted = paired_bootstrap(b + 0.1, b)
    assert shifted.mean == pytest.approx(0.1) and shifted.low == pytest.approx(0.1) and p_shifted == 0.0
    # a small shift under item noise much larger than it: the interval holds 0, p is large
    noisy, p_noisy = paired_bootstrap(b + 0.01 + rng.normal(0, 0.5, size=300), b)
    assert noisy.low < 0 < noisy.high and p_noisy > 0.3
    # pairing matters: the same shift is found although the items' own spread is large
    wide = rng.uniform(0, 10, size=300)
    paired, p_paired = paired_bootstrap(wide + 0.05 + rng.normal(0, 0.01, size=300), wide)
    assert paired.low > 0.04 and p_paired == 0.0


def test_fidelity_table_compares_systems_on_the_same_items() -> None:
    assert rouge_l_f1("a b c", "a b d") == pytest.approx(2 / 3)
    assert chrf("the dog ran", "the dog ran") == 1.0 and chrf("abc", "xyz") == 0.0
    assert item_fidelity("the dog ran", "the dog ran", "chrf") == 1.0

    def records(name_input: str, answers: list[str]) -> list[dict]:
        return [{"utt": f"u{n}", "task": "summary", "prompt_id": "p", "split": "unseen", "input": name_input,
                 "hyp": a, "ref": None} for n, a in enumerate(answers)]

    teacher = [f"the dog number {n} ran home" for n in range(30)]
    hyps = {"teacher_text": records("text", teacher), "mtbi": records("speech", teacher),
            "asr_sft": records("speech", ["xyz"] * 30)}
    table = fidelity_table(hyps, "mtbi", "rouge_l", num=500)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "1.000 [1.000, 1.000] (n=30)" in rows["mtbi"]
    assert "0.000 [0.000, 0.000] (n=30) | +1.000 [+1.000, +1.000], p<0.002" in rows["asr_sft"]
    assert rows["asr_sft"].count(" - ") == 4  # no seen-prompt or held-out items: empty cells
