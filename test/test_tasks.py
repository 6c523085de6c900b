"""Task bank, split, rules and prompt rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from teacher_fixtures import make_random_teacher
from transformers import AutoTokenizer

from mtbi.errors import MtbiError
from mtbi.mini.corpus import generate_sentences, load_lexicon
from mtbi.mini.rules import RULE_NAMES, parse_mini_sentence, rule_answer
from mtbi.tasks.bank import DEFAULT_BANK, load_task_bank
from mtbi.tasks.prompting import normalize_transcript, render_prompt


def test_default_bank_shape() -> None:
    bank = load_task_bank()
    assert len(bank.tasks) >= 10
    assert len({t.family for t in bank.tasks.values()}) >= 8
    assert all(len(t.prompts) >= 8 for t in bank.tasks.values())
    assert all(t.rule in RULE_NAMES for t in bank.tasks.values())
    assert len(bank.heldout_tasks) >= 3 and not set(bank.heldout_tasks) & set(bank.train_tasks)
    for name in bank.tasks:
        seen, unseen = bank.prompt_ids(name, "seen"), bank.prompt_ids(name, "unseen")
        assert len(unseen) == 2 and not set(seen) & set(unseen)
        assert sorted(seen + unseen) == sorted(bank.prompt_ids(name, "all"))


def _conf(tmp_path: Path, **values) -> Path:
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    def split(seed: int) -> dict[str, list[str]]:
        return {n: load_task_bank(_conf(tmp_path, split_seed=seed)).prompt_ids(n, "unseen") for n in load_task_bank().tasks}

    assert split(0) == split(0)
    assert split(0) != split(1)
    bank = load_task_bank(_conf(tmp_path, heldout_tasks=["topic", "summary"], unseen_prompts_per_task=3))
    assert bank.heldout_tasks == ["summary", "topic"] and len(bank.prompt_ids("topic", "unseen")) == 3
    assert bank.select_tasks("summary,topic") == ["summary", "topic"]


def test_bank_errors(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match="held-out task 'weather' is not in the task bank"):
        load_task_bank(_conf(tmp_path, heldout_tasks=["weather"]))
    with pytest.raises(MtbiError, match="unknown key 'held_out'"):
        load_task_bank(_conf(tmp_path, held_out=["topic"]))
    bank = load_task_bank()
    with pytest.raises(MtbiError, match="task 'weather' is not in the task bank"):
        bank.select_tasks("topic,weather")
    with pytest.raises(MtbiError, match="prompt id 'topic/99' does not exist"):
        bank.prompt("topic/99")
    spec = yaml.safe_load(DEFAULT_BANK.read_text())
    spec["tasks"]["topic"]["prompts"][3] = "What is the topic?"
    (tmp_path / "bank.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(MtbiError, match=r"task topic, prompt 3 must contain \{transcript\} exactly once"):
        load_task_bank(_conf(tmp_path, bank=str(tmp_path / "bank.yaml")))


def test_rules_on_a_known_sentence() -> None:
    text = "THE TIRED FOX HID SIX BLUE TRAINS IN THE BARN THIS MORNING"
    answers = {rule: rule_answer(rule, normalize_transcript(text)) for rule in RULE_NAMES}
    assert answers == {
        "transcript": "the tired fox hid six blue trains in the barn this morning",
        "continuation": "then the fox took the trains home",
        "qa_subject": "the fox", "qa_place": "in the barn", "qa_number": "six", "qa_color": "blue",
        "keywords": "fox, trains, barn", "summary": "a tired fox hid trains",
        "paraphrase": "six blue trains were hidden by the tired fox in the barn this morning",
        "future_tense": "the tired fox will hide six blue trains in the barn",
        "sentiment": "negative", "topic": "toys", "word_count": "12",
        "reverse_words": "morning this barn the in trains blue six hid fox tired the",
        "first_letters": "t t f h s b t i t b t m",
    }
    assert rule_answer("topic", "The happy dog found two red apples in the park.") == "food"
    assert rule_answer("topic", "this is not a mini sentence") is None


def test_every_generated_sentence_parses() -> None:
    import random
    lexicon = load_lexicon()
    for sentence in generate_sentences(300, random.Random(5), set(), lexicon):
        parsed = parse_mini_sentence(sentence)
        assert parsed is not None and " ".join(parsed.words) == sentence


def test_render_prompt_uses_the_chat_template(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(make_random_teacher(tmp_path / "t"))
    rendered = render_prompt(tokenizer, "Who is this about? {transcript}", "the sad cat")
    assert rendered == "<|user|>Who is this about? the sad cat<|end|><|assistant|>"
    tokenizer.chat_template = None
    assert render_prompt(tokenizer, "Who? {transcript}", "the cat") == "Who? the cat\n"
    assert normalize_transcript("THE  SAD CAT") == "the sad cat"
    assert normalize_transcript("The sad cat.") == "The sad cat."
