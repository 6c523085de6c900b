"""Benchmark building, inference and scoring (stages 7-8) on small real data."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import torch
from sllm_fixtures import make_imitation_data, make_model_dirs, make_trained_dir
from teacher_fixtures import SENTENCES

from mtbi.bench.build import BenchItem, build_bench, read_bench, write_bench
from mtbi.bench.infer import SpeechAnswerer, run_inference
from mtbi.bench.metrics import bleu, exact_match, follows_task, is_transcription, normalize_answer, rouge_l, word_error_rate
from mtbi.bench.scoring import score_system
from mtbi.data.speech_features import SpeechFeatures
from mtbi.env import cpu_description
from mtbi.env import record as record_env
from mtbi.errors import MtbiError
from mtbi.hub import ResolvedModel
from mtbi.models.interleave import SpeechSegment, TextSegment, build_segments
from mtbi.models.speech_prompt import tokenize_prompt
from mtbi.pretrained import SpeechLLM, speech_segments
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.generation import GenerationParams
from mtbi.train.sllm_dir import load_sllm

BANK = load_task_bank()


# -- metrics -------------------------------------------------------------------------------
def test_metrics_on_hand_made_answers() -> None:
    assert normalize_answer("  The Dog's  ball, red! ") == "the dog's ball red"
    assert exact_match(["The park.", "two"], ["the park", "three"]) == 0.5
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["w x y z"]) == pytest.approx(0.0)
    # ROUGE-L: LCS 3 words, precision 3/4, recall 3/3 -> F = 6/7
    assert rouge_l(["the cat sat down"], ["the cat sat"]) == pytest.approx(6 / 7)
    # 1 substitution + 1 insertion over 3 reference words; an empty answer deletes all 2 words
    assert word_error_rate(["a x c d"], ["a b c"]) == pytest.approx(2 / 3)
    assert word_error_rate(["a x c d", ""], ["a b c", "e f"]) == pytest.approx(4 / 5)
    transcript = "the happy dog found two red apples in the park"
    assert is_transcription("The happy dog found two red apples in the park.", transcript)
    assert is_transcription("the happy dog found two red apples in a park", transcript)  # WER 0.1
    assert not is_transcription("in the park", transcript)
    assert not is_transcription("", transcript)


def test_task_following_rule_on_hand_made_answers() -> None:
    """A transcription fails however badly it was recognized; an answer of the task's kind
    passes, right or wrong, whatever words of the input it repeats."""
    transcript = "the happy dog found two red apples in the park"
    keywords, future = "dog, apples, park", "the happy dog will find two red apples in the park"
    misrecognized = "a happy dock found to read apples in a bark"  # WER 0.6: the old 25% rule passed it
    assert word_error_rate([misrecognized], [transcript]) == pytest.approx(0.6)
    for answer, task_answer, follows in [
        (transcript, keywords, False),
        ("The happy dog found two red apples in the park.", future, False),
        (misrecognized, keywords, False),
        (misrecognized, future, False),
        ("happy dog found two red apples", keywords, False),  # 6 of 10 words, all from the input
        (keywords, keywords, True),
        ("cat, pears, garden", keywords, True),  # wrong, but an answer of the task's kind
        ("park", keywords, True),  # one word of the input
        ("in the park", "in the park", True),
        (future, future, True),
        ("the happy dog will find two red apples in a park", future, True),
        ("then the dog took the apples home", "then the dog took the apples home", True),
        ("", keywords, False),
        (" ", keywords, False),
    ]:
        assert follows_task(answer, transcript, task_answer) == follows, (answer, task_answer)


def _record(utt: str, task: str, split: str, hyp: str, ref: str | None, transcript: str) -> dict:
    return {"utt": utt, "task": task, "prompt_id": f"{task}/0", "split": split, "input": "speech",
            "hyp": hyp, "ref": ref, "transcript": transcript}


def test_scores_of_hand_made_hyp_files_have_the_known_values() -> None:
    t1, t2 = SENTENCES[0], SENTENCES[1]
    teacher = [
        _record("u1", "transcription", "seen", t1, t1, t1),
        _record("u2", "transcription", "seen", t2, t2, t2),
        _record("u1", "qa_subject", "unseen", "the dog", "the dog", t1),
        _record("u2", "qa_subject", "unseen", "the cat", "the cat", t2),
        _record("u1", "qa_place", "heldout", "in the park", "in the park", t1),
        _record("u2", "qa_place", "heldout", "in the garden", "in the garden", t2),
    ]
    system = [
        _record("u1", "transcription", "seen", t1, t1, t1),                          # right
        _record("u2", "transcription", "seen", "the sad cat sold seven", t2, t2),    # 6 of 11 words deleted
        _record("u1", "qa_subject", "unseen", "The dog.", "the dog", t1),            # right
        _record("u2", "qa_subject", "unseen", "the horse", "the cat", t2),           # wrong
        _record("u1", "qa_place", "heldout", t1, "in the park", t1),                 # a transcription
        _record("u2", "qa_place", "heldout", "in the garden", "in the garden", t2),  # right
    ]
    scores = score_system(system, teacher, BANK)
    seen = scores["prompt_generalization"]["seen"]
    assert seen["n"] == 2 and seen["fidelity"]["exact_match"] == 0.5
    assert seen["wer"] == pytest.approx(6 / 21, abs=1e-4) and scores["wer"] == pytest.approx(6 / 21, abs=1e-4)
    assert seen["task_following"] is None  # transcription is not asked to be anything else
    unseen = scores["prompt_generalization"]["unseen"]
    assert unseen["fidelity"]["exact_match"] == 0.5 and unseen["task_accuracy"] == 0.5
    assert unseen["task_following"] == 1.0
    held = scores["task_generalization"]["heldout"]
    assert held["fidelity"]["exact_match"] == 0.5 and held["task_accuracy"] == 0.5
    assert held["task_following"] == 0.5  # one of the two answers is a transcription
    assert held["fidelity"]["rouge_l"] == pytest.approx((2 * 0.3 * 1.0 / 1.3 + 1) / 2, abs=1e-4)  # P 3/10, R 3/3
    assert scores["per_task"]["qa_subject"]["unseen"]["fidelity"]["exact_match"] == 0.5
    own = score_system(teacher, teacher, BANK)
    assert own["task_generalization"]["heldout"]["fidelity"]["exact_match"] == 1.0
    with pytest.raises(MtbiError, match=r"the teacher's answers lack 1 item\(s\)"):
        score_system(system, teacher[:-1], BANK)
    with pytest.raises(MtbiError, match=r"this system's answers lack 1 item\(s\)"):
        score_system(system[:-1], teacher, BANK)
    with pytest.raises(MtbiError, match="not in the task bank"):
        score_system([{**system[0], "task": "poetry"}], None, BANK)


# -- building ------------------------------------------------------------------------------
TEXTS = {f"spk{n % 2}-utt{n:03d}": s.upper() for n, s in enumerate(SENTENCES)}


def test_the_benchmark_is_deterministic_and_split_as_the_bank_says() -> None:
    items = build_bench(TEXTS, BANK, seed=3)
    assert items == build_bench(dict(reversed(TEXTS.items())), BANK, seed=3)
    assert items != build_bench(TEXTS, BANK, seed=4)
    per_utt = len(BANK.train_tasks) * 2 + len(BANK.heldout_tasks)
    assert len(items) == len(TEXTS) * per_utt
    for item in items:
        if item.task in BANK.heldout_tasks:
            assert item.split == "heldout"
        else:
            assert item.prompt_id in BANK.prompt_ids(item.task, item.split)
        assert item.prompt == BANK.prompt(item.prompt_id) and item.transcript == item.transcript.lower()
    refs = {(i.utt, i.task): i.ref for i in items}
    assert refs[("spk0-utt000", "qa_place")] == "in the park"
    assert refs[("spk1-utt001", "transcription")] == SENTENCES[1]
    some = build_bench({**TEXTS, "spk0-empty": " "}, BANK, max_utts=2, seed=1)
    assert len({i.utt for i in some}) == 2 and "spk0-empty" not in {i.utt for i in some}
    assert not [i for i in build_bench({"spk0-x": "hello there world"}, BANK) if i.task == "qa_place"][0].ref


def test_bench_file_round_trip_and_a_bad_line_is_a_clear_error(tmp_path: Path) -> None:
    items = build_bench(TEXTS, BANK)
    write_bench(items, tmp_path / "bench.jsonl")
    assert read_bench(tmp_path / "bench.jsonl") == items
    (tmp_path / "bad.jsonl").write_text('{"utt": "a"}\n')
    with pytest.raises(MtbiError, match="bad.jsonl:1: not a benchmark line"):
        read_bench(tmp_path / "bad.jsonl")
    with pytest.raises(MtbiError, match="made by stage 7"):
        read_bench(tmp_path / "missing.jsonl")


# -- inference -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sllm(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A stage-6-like SLLM dir (random connector) over a random encoder and teacher, and the
    features of a few espeak-ng utterances."""
    root = tmp_path_factory.mktemp("bench")
    encoder, teacher = make_model_dirs(root)
    data = make_imitation_data(root / "data", num_utts=4)
    model_dir = make_trained_dir(ResolvedModel(teacher), encoder, root / "sllm")
    texts = {}
    for line in data["targets"].read_text().splitlines():
        record = json.loads(line)
        texts[record["utt"]] = record["transcript"]
    return {"model_dir": model_dir, "feats": data["feats"], "texts": texts, "teacher": teacher}


def test_speech_prompts_hold_no_transcript_and_match_training(sllm: dict) -> None:
    model, tokenizer = load_sllm(sllm["model_dir"])
    for prompt_id in [f"{t}/{i}" for t in BANK.tasks for i in range(len(BANK.task(t).prompts))]:
        prompt = BANK.prompt(prompt_id)
        segments = speech_segments(tokenizer, prompt)
        assert [type(s) for s in segments] == [TextSegment, SpeechSegment, TextSegment]
        for transcript in SENTENCES:  # what training builds when every word is speech
            tokens = tokenize_prompt(tokenizer, prompt, transcript)
            assert build_segments(tokens, [True] * tokens.num_words, None) == segments, prompt_id


def test_batched_speech_answers_equal_one_by_one_answers(sllm: dict) -> None:
    model = SpeechLLM.from_pretrained(sllm["model_dir"])
    items = build_bench(sllm["texts"], BANK)[::7]
    batched = SpeechAnswerer(model, SpeechFeatures(sllm["feats"]), GenerationParams(max_new_tokens=6, batch_size=8))
    single = SpeechAnswerer(model, SpeechFeatures(sllm["feats"]), GenerationParams(max_new_tokens=6, batch_size=1))
    answers = batched.answer(items)
    assert len(answers) == len(items) and any(answers)
    assert answers == single.answer(items)


class CountingAnswerer:
    """Answers 'answer to <utt>' and counts what it was asked; fails after ``fail_after`` items."""

    input = "speech"

    def __init__(self, fail_after: int | None = None) -> None:
        self.asked, self.fail_after = 0, fail_after

    def answer(self, items: list[BenchItem]) -> list[str]:
        if self.fail_after is not None and self.asked + len(items) > self.fail_after:
            raise KeyboardInterrupt
        self.asked += len(items)
        return [f"answer to {i.utt} {i.task}" for i in items]


def test_inference_resumes_without_losing_or_repeating_answers(tmp_path: Path) -> None:
    items = build_bench(TEXTS, BANK)
    with pytest.raises(KeyboardInterrupt):
        run_inference(items, CountingAnswerer(fail_after=25), tmp_path, {"model": "a"}, chunk_size=10)
    partial = tmp_path / "hyp.partial.jsonl"
    with open(partial, "a") as f:
        f.write('{"utt": "spk0-utt0')  # a half-written line, as after SIGKILL
    assert len(partial.read_text().splitlines()) == 21
    resumed = CountingAnswerer()
    hyp = run_inference(items, resumed, tmp_path, {"model": "a"}, chunk_size=10)
    assert resumed.asked == len(items) - 20
    records = [json.loads(line) for line in hyp.read_text().splitlines()]
    assert [(r["utt"], r["task"], r["prompt_id"]) for r in records] == [i.key for i in items]
    assert all(r["hyp"] == f"answer to {r['utt']} {r['task']}" for r in records)
    assert not partial.exists()
    again = CountingAnswerer()
    run_inference(items, again, tmp_path, {"model": "a"})
    assert again.asked == 0
    run_inference(items, again, tmp_path, {"model": "b"})  # another model: answered again
    assert again.asked == len(items)


# -- command line ----------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_score_and_compare_write_reports_and_the_results_table(tmp_path: Path) -> None:
    items = build_bench(TEXTS, BANK)
    for system, wrong in (("teacher_text", set()), ("sllm_mtbi", {"qa_place", "transcription"}),
                          ("sllm_mtbi_seed1", {"qa_place", "transcription", "summary"})):
        out = tmp_path / system / "bench_test"
        out.mkdir(parents=True)
        lines = [json.dumps({"utt": i.utt, "task": i.task, "prompt_id": i.prompt_id, "split": i.split,
                             "input": "text" if system == "teacher_text" else "speech",
                             "hyp": "no idea" if i.task in wrong else (i.ref or "x"), "ref": i.ref,
                             "prompt": i.prompt, "transcript": i.transcript}) for i in items]
        (out / "hyp.jsonl").write_text("\n".join(lines) + "\n")
        teacher_hyp = tmp_path / "teacher_text" / "bench_test" / "hyp.jsonl"
        scored = _cli("mtbi.bin.score", "--hyp", str(out / "hyp.jsonl"), "--teacher_hyp", str(teacher_hyp))
        assert scored.returncode == 0, scored.stderr
        assert (out / "scores.png").stat().st_size > 1000 and "| held-out tasks |" in (out / "RESULTS.md").read_text()
    scores = json.loads((tmp_path / "sllm_mtbi" / "bench_test" / "scores.json").read_text())
    assert scores["per_task"]["qa_place"]["heldout"]["fidelity"]["exact_match"] == 0.0
    assert scores["per_task"]["keywords"]["heldout"]["fidelity"]["exact_match"] == 1.0
    assert scores["task_generalization"]["heldout"]["fidelity"]["exact_match"] == pytest.approx(4 / 5, abs=1e-4)
    assert scores["wer"] == 1.0
    for run in ("sllm_mtbi", "sllm_mtbi_seed1"):  # what stage 6 records of each training
        record_env(tmp_path / run / "env.txt", 6, torch_threads="1")
    readme = tmp_path / "RESULTS.md"
    readme.write_text("# Recipe\n\n<!-- results:test:begin -->\nold table\n<!-- results:test:end -->\n\nmore text\n")
    compared = _cli("mtbi.bin.compare", "--test_set", "test", "--systems", str(tmp_path / "teacher_text"),
                    str(tmp_path / "sllm_mtbi"), str(tmp_path / "sllm_mtbi_seed1"), "--out", str(tmp_path / "results_test"),
                    "--markdown", str(readme), "--metric", "exact_match", "--resamples", "500")
    assert compared.returncode == 0, compared.stderr
    # two seeds of mtbi: 9 and 8 of the 10 seen questions right (std 7.1 points), 4 of 5 held-out in both
    row = "| mtbi | speech | 2 | 85.0 ± 7.1 | 85.0 ± 7.1 | 80.0 ± 0.0 | 80.0 ± 0.0 | 100.0 ± 0.0 | 100.0 ± 0.0 | - | - |"
    assert row in compared.stdout
    # stamped with the command, and the commit, machine and threads the runs were trained with
    stamp = compared.stdout.splitlines()[0]
    assert stamp.startswith(f"Made {date.today().isoformat()} by `python -m mtbi.bin.compare --test_set test ")
    assert "from runs trained at mtbi commit " in stamp and f" on {cpu_description()}, torch {torch.__version__}, " \
        "1 torch thread per job" in stamp
    data = json.loads((tmp_path / "results_test.json").read_text())
    assert data["systems"]["mtbi"]["seeds"] == 2 and data["headline_metric"] == "exact_match"
    seen = data["systems"]["mtbi"]["fidelity"]["exact_match"]["seen"]
    assert seen["per_seed"] == pytest.approx([0.9, 0.8]) and seen["mean"] == pytest.approx(0.85)
    assert seen["num_items"] == len(TEXTS) * len(BANK.train_tasks)
    assert set(data["systems"]["mtbi"]["fidelity"]) == {"exact_match", "rouge_l", "chrf"}
    text = readme.read_text()
    assert "old table" not in text and text.endswith("more text\n") and compared.stdout in text
    assert (tmp_path / "results_test.png").is_file()
    # two sample questions per split below the table, each answered by both systems
    samples = compared.stdout.split("Sample answers")[1]
    assert samples.count("| teacher_text |") == samples.count("| mtbi |") == 6
    titles = [line.split(",")[0] for line in samples.splitlines() if line.endswith("]")]
    assert titles == ["seen prompts"] * 2 + ["unseen prompts"] * 2 + ["held-out tasks"] * 2
    assert "| mtbi | no idea |" in samples or "qa_place" not in samples
    keyed = _cli("mtbi.bin.compare", "--test_set", "test", "--systems", str(tmp_path / "teacher_text"),
                 "--out", str(tmp_path / "results_smol"), "--markdown", str(readme), "--markdown_key", "smol:test",
                 "--samples", "0")
    assert keyed.returncode == 0 and "Sample answers" not in keyed.stdout
    assert "<!-- results:smol:test:begin -->" in readme.read_text() and compared.stdout in readme.read_text()
    missing = _cli("mtbi.bin.score", "--hyp", str(tmp_path / "nope" / "bench_test" / "hyp.jsonl"))
    assert missing.returncode == 1 and "made by stage 7" in missing.stderr
