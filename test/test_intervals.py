"""Bootstrap intervals and paired tests over benchmark items, on values whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from mtbi.bench.intervals import bootstrap_interval, compare_fidelity, item_fidelity, paired_bootstrap
from mtbi.bench.metrics import chrf, rouge_l_f1
from mtbi.bench.report import fidelity_markdown


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


def _records(input_: str, answers: list[str], split: str = "unseen") -> list[dict]:
    return [{"utt": f"u{n}", "task": "summary", "prompt_id": "p", "split": split, "input": input_,
             "hyp": a, "ref": None} for n, a in enumerate(answers)]


def test_fidelity_table_compares_systems_on_the_same_items() -> None:
    assert rouge_l_f1("a b c", "a b d") == pytest.approx(2 / 3)
    assert chrf("the dog ran", "the dog ran") == 1.0 and chrf("abc", "xyz") == 0.0
    assert item_fidelity("the dog ran", "the dog ran", "chrf") == 1.0
    assert item_fidelity("The dog ran.", "the dog ran", "exact_match") == 1.0

    teacher = [f"the dog number {n} ran home" for n in range(30)]
    runs = {"teacher_text": [_records("text", teacher)], "mtbi": [_records("speech", teacher)],
            "asr_sft": [_records("speech", ["xyz"] * 30)]}
    fidelity = compare_fidelity(runs, "mtbi", "rouge_l", num=500)
    assert set(fidelity["asr_sft"]) == {"unseen"}  # no seen-prompt or held-out items
    table = fidelity_markdown({k: fidelity[k] for k in ("mtbi", "asr_sft")}, "rouge_l", "mtbi", 500)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "1.000 [1.000, 1.000] (n=30)" in rows["mtbi"]
    assert "0.000 [0.000, 0.000] (n=30) | +1.000 [+1.000, +1.000], p<0.002" in rows["asr_sft"]
    assert rows["asr_sft"].count(" - ") == 4  # no seen-prompt or held-out items: empty cells


def test_seeds_give_a_spread_and_are_pooled_per_item_for_the_intervals() -> None:
    """Two seeds of asr_sft: one wrong everywhere, one right on the even items. Per seed the means
    are 0 and 0.5 (mean 0.25, std 0.354); pooled, the even items score 0.5 and the odd 0."""
    teacher = [f"answer {n}" for n in range(40)]
    half = [a if n % 2 == 0 else "no" for n, a in enumerate(teacher)]
    runs = {"teacher_text": [_records("text", teacher)], "mtbi": [_records("speech", teacher)] * 2,
            "asr_sft": [_records("speech", ["no"] * 40), _records("speech", half)]}
    asr = compare_fidelity(runs, "mtbi", "exact_match", num=1000)["asr_sft"]["unseen"]
    assert asr.per_seed == (0.0, 0.5) and asr.std == pytest.approx(np.sqrt(0.125))
    assert asr.items.mean == pytest.approx(0.25) and asr.num_items == 40
    half_width = 1.96 * 0.25 / np.sqrt(40)  # the pooled items' sd is 0.25
    assert asr.items.low == pytest.approx(0.25 - half_width, abs=0.03)
    diff, p = asr.vs_reference
    assert diff.mean == pytest.approx(0.75) and diff.low > 0.6 and p == 0.0
    mtbi = compare_fidelity(runs, "mtbi", "exact_match", num=1000)["mtbi"]["unseen"]
    assert mtbi.per_seed == (1.0, 1.0) and mtbi.std == 0.0 and mtbi.vs_reference is None
    row = next(line for line in fidelity_markdown({"asr_sft": {"unseen": asr}}, "exact_match", "mtbi", 1000).splitlines()
               if line.startswith("| asr_sft"))
    assert "25.0 ± 35.4 [" in row and "(n=40) | +75.0 [" in row and "p<0.001" in row
