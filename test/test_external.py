"""External test sets (mtbi/bench/external.py): reading jsonl items, parsing multiple-choice answers,
and a set of espeak-ng questions about mini-corpus speech built, answered and scored end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from sllm_fixtures import VOICES, make_model_dirs, make_trained_dir
from teacher_fixtures import SENTENCES

from mtbi import SpeechLLM
from mtbi.bench.build import read_bench
from mtbi.bench.external import choice_prompt, parse_choice, read_external, score_external
from mtbi.errors import MtbiError
from mtbi.hub import ResolvedModel
from mtbi.mini.rules import rule_answer
from mtbi.mini.tts import Synthesizer

CHOICES = ["a child", "a man", "a woman"]


def test_multiple_choice_answers_are_parsed_on_hand_made_cases() -> None:
    for answer, picked in [("B", 1), ("(B)", 1), ("B. a man", 1), ("C)", 2), ("The answer is C.", 2),
                           ("answer: A", 0), ("Answer: B", 1), ("Answer is C", 2), ("a woman", 2), ("A Woman.", 2),
                           ("I think it is a man.", 1),
                           ("A child speaks", 0), ("a child or a man", None), ("D", None), ("nobody", None),
                           ("", None), ("a", None)]:
        assert parse_choice(answer, CHOICES) == picked, answer
    assert choice_prompt("Who speaks?", CHOICES) == (
        "Who speaks? {transcript}\nA. a child\nB. a man\nC. a woman\nAnswer with the letter of the right choice.")
    assert choice_prompt("Listen: {transcript} Who speaks?", ["x", "y"]).startswith("Listen: {transcript} Who speaks?\nA. x")


def _write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def test_bad_items_are_one_line_errors_naming_the_line(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", [0.0] * 1600, 16000)
    good = {"id": "a", "audio": "a.wav", "question": "Who speaks?", "answer": "B", "choices": CHOICES}
    assert read_external(_write_jsonl(tmp_path / "ok.jsonl", [good]))[0].ref == "a man"
    spoken = {**good, "choices": ["A", "B", "C", "D"], "answer": "C", "list_choices": False}  # choices read out
    item = read_external(_write_jsonl(tmp_path / "ok.jsonl", [spoken]))[0]
    assert (item.prompt, item.ref, parse_choice("The answer is C.", item.choices)) == ("Who speaks?", "C", 2)
    for change, message in [
        ({"audio": "b.wav"}, r"bad.jsonl:2: audio file .*b.wav not found"),
        ({"answer": "E"}, "bad.jsonl:2: answer 'E' is neither one of the choices nor their letter .A-C."),
        ({"choices": ["only one"]}, "bad.jsonl:2: choices must be a list of 2 to 26 strings"),
        ({"question": None}, "bad.jsonl:2: no 'question' string"),
        ({"question": "{transcript} and {transcript}"}, "bad.jsonl:2: question .* has 2 .transcript. slots"),
        ({"id": "a"}, "bad.jsonl:2: id 'a' is used twice"),
    ]:
        with pytest.raises(MtbiError, match=message):
            read_external(_write_jsonl(tmp_path / "bad.jsonl", [good, {**good, "id": "b", **change}]))


def test_scores_of_hand_made_answers(tmp_path: Path) -> None:
    def record(utt: str, task: str, hyp: str, ref: str, choices: list[str] | None = None) -> dict:
        return {"utt": utt, "task": task, "prompt_id": "0", "split": "external", "input": "speech", "hyp": hyp,
                "ref": ref, **({"choices": choices} if choices else {})}

    records = [record("1", "speaker", "B", "a man", CHOICES), record("2", "speaker", "the answer is A", "a man", CHOICES),
               record("3", "speaker", "hmm", "a child", CHOICES), record("4", "speaker", "a woman.", "a woman", CHOICES),
               record("5", "free_form", "The park.", "the park"), record("6", "free_form", "a garden", "the park")]
    scores = score_external(records)
    speaker, free = scores["external"]["speaker"], scores["external"]["free_form"]
    assert speaker["kind"] == "multiple_choice" and speaker["accuracy"]["mean"] == 0.5 and speaker["no_choice"] == 0.25
    assert speaker["accuracy"]["low"] <= 0.5 <= speaker["accuracy"]["high"] and speaker["n"] == 4
    assert free["kind"] == "free_form" and free["exact_match"]["mean"] == 0.5 and 0 < free["chrf"]["mean"] < 1


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)


@pytest.mark.slow
def test_an_external_set_is_built_answered_and_scored_end_to_end(tmp_path: Path) -> None:
    """espeak-ng questions about mini-corpus sentences: which colour (multiple choice, answer by
    letter or by text) and who (free form), with audio in a subdir, answered by an SLLM from the
    audio files and scored against the set's answers."""
    synthesizer, items = Synthesizer(), []
    (tmp_path / "set" / "wav").mkdir(parents=True)
    colours = ["red", "blue", "green", "yellow"]
    for n, text in enumerate(SENTENCES[:4]):
        result = synthesizer.synthesize(text, VOICES[n % 2])
        sf.write(tmp_path / "set" / "wav" / f"s{n}.flac", result.samples, result.sample_rate)
        colour = rule_answer("qa_color", text)
        choices = [colour] + [c for c in colours if c != colour][:2]
        items.append({"id": f"s{n}-colour", "audio": f"wav/s{n}.flac", "question": "Which colour is mentioned?",
                      "choices": choices, "answer": "A" if n % 2 else colour, "transcript": text})
        items.append({"id": f"s{n}-who", "audio": f"wav/s{n}.flac", "question": "Who is this sentence about?",
                      "answer": rule_answer("qa_subject", text)})
    jsonl = _write_jsonl(tmp_path / "set" / "questions.jsonl", items)
    model_dir = make_trained_dir(ResolvedModel(make_model_dirs(tmp_path / "exp")[1]), tmp_path / "exp" / "encoder",
                                 tmp_path / "exp" / "sllm_random")
    bench_dir, out = tmp_path / "exp" / "bench" / "my_set", model_dir / "bench_my_set"
    built = _cli("mtbi.bin.build_bench", "--from_jsonl", str(jsonl), "--out_dir", str(bench_dir))
    assert built.returncode == 0, built.stderr
    bench = read_bench(bench_dir / "bench.jsonl")
    assert [i.task for i in bench] == ["multiple_choice", "free_form"] * 4 and {i.split for i in bench} == {"external"}
    assert all(Path(i.audio).is_absolute() and Path(i.audio).is_file() for i in bench)
    answered = _cli("mtbi.bin.infer", "--bench", str(bench_dir / "bench.jsonl"), "--input", "speech",
                    "--model_dir", str(model_dir), "--out_dir", str(out))
    assert answered.returncode == 0, answered.stderr
    hyps = [json.loads(line) for line in (out / "hyp.jsonl").read_text().splitlines()]
    model = SpeechLLM.from_pretrained(model_dir)
    assert [h["hyp"] for h in hyps] == [model.answer(i.audio, i.prompt) for i in bench]  # the API's answers
    scored = _cli("mtbi.bin.score", "--hyp", str(out / "hyp.jsonl"))
    assert scored.returncode == 0, scored.stderr
    scores = json.loads((out / "scores.json").read_text())
    mc = [h for h in hyps if h["task"] == "multiple_choice"]
    right = sum(parse_choice(h["hyp"], h["choices"]) == h["choices"].index(h["ref"]) for h in mc)
    assert scores["external"]["multiple_choice"]["accuracy"]["mean"] == pytest.approx(right / 4)
    assert scores["external"]["free_form"]["n"] == 4 and scores["num_items"] == 8
    results = (out / "RESULTS.md").read_text()
    assert "| multiple_choice | 4 |" in results and "| free_form | 4 | - |" in results
    no_feats = _cli("mtbi.bin.infer", "--bench", str(bench_dir / "bench.jsonl"), "--input", "text",
                    "--model_dir", str(model_dir), "--out_dir", str(tmp_path / "text"))
    assert no_feats.returncode == 1 and "--input text needs --teacher_conf" in no_feats.stderr
