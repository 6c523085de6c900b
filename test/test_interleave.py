"""Where the speech goes: prompt tokenization, interleaving segments and the embedded inputs."""

from __future__ import annotations

import random

import pytest
import torch
from sllm_fixtures import make_model_dirs
from teacher_fixtures import SENTENCES, make_random_teacher
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mtbi.errors import MtbiError
from mtbi.models.interleave import InterleaveConfig, InterleavePolicy, SpeechSegment, TextSegment, build_segments, replace_spans
from mtbi.models.speech_llm import SpeechBatch, SpeechLLMConfig, build_speech_llm
from mtbi.models.speech_prompt import TEMPLATE, tokenize_prompt
from mtbi.tasks.prompting import render_prompt

PROMPT = "Who is this sentence about? {transcript}"
TEXT = SENTENCES[1]  # 11 words
TIMES = [(0.2 + 0.3 * i, 0.45 + 0.3 * i) for i in range(11)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(make_random_teacher(tmp_path_factory.mktemp("teacher")))


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2/SmolLM2-style byte-level BPE tokenizer with a ChatML template."""
    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator(SENTENCES * 3 + [PROMPT], vocab_size=300, special_tokens=["<|im_end|>"],
                                show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>")
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                               "<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    return tokenizer


@pytest.mark.parametrize("kind", ["sentencepiece", "byte_level"])
def test_prompt_tokens_equal_the_teachers_input_and_map_to_words(kind: str, tokenizer) -> None:
    tok = tokenizer if kind == "sentencepiece" else byte_level_tokenizer()
    tokens = tokenize_prompt(tok, PROMPT, TEXT)
    assert tokens.ids == tok(render_prompt(tok, PROMPT, TEXT), add_special_tokens=False)["input_ids"]
    assert tokens.num_words == 11
    words = {}
    for token, word in zip(tokens.ids, tokens.word_of):
        if word != TEMPLATE:
            words.setdefault(word, []).append(token)
    assert sorted(words) == list(range(11))
    spelled = [tok.decode(words[w]).strip() for w in range(11)]
    assert spelled == TEXT.split()


def test_replace_spans_counts_and_span_lengths() -> None:
    rng = random.Random(0)
    for num_words in (1, 5, 11, 30):
        for ratio in (0.0, 0.3, 0.5, 1.0):
            replaced = replace_spans(num_words, ratio, 1, 4, rng)
            assert sum(replaced) == round(ratio * num_words)
    policy = InterleavePolicy(InterleaveConfig(prob=0.0))
    assert policy.choose(7, rng) == [True] * 7  # prob 0: always speech only


def test_curriculum_interleaves_only_before_until_step() -> None:
    always = InterleavePolicy(InterleaveConfig(prob=1.0, min_ratio=0.5, max_ratio=0.5))
    curriculum = InterleavePolicy(InterleaveConfig(prob=1.0, min_ratio=0.5, max_ratio=0.5, until_step=100))
    for step in (0, 99):  # before until_step: the same draw as without a curriculum
        assert curriculum.choose(10, random.Random(step), step) == always.choose(10, random.Random(step), step)
        assert sum(curriculum.choose(10, random.Random(step), step)) == 5
    for step in (100, 5000):
        assert curriculum.choose(10, random.Random(step), step) == [True] * 10  # speech only
        assert sum(always.choose(10, random.Random(step), step)) == 5
    with pytest.raises(MtbiError, match="until_step >= 0"):
        InterleaveConfig(until_step=-1)


def test_segments_for_none_some_and_all_words(tokenizer) -> None:
    tokens = tokenize_prompt(tokenizer, PROMPT, TEXT)
    assert build_segments(tokens, [False] * 11, None) == [TextSegment(tokens.ids)]
    speech_only = build_segments(tokens, [True] * 11, None)
    assert [type(s) for s in speech_only] == [TextSegment, SpeechSegment, TextSegment]
    assert speech_only[1] == SpeechSegment(None, None)
    replaced = [False, True, True, False, False, False, True, False, False, False, True]
    segments = build_segments(tokens, replaced, TIMES)
    speech = [s for s in segments if isinstance(s, SpeechSegment)]
    # words 1-2 as one span, word 6, and the last word running to the end of the utterance
    assert speech == [SpeechSegment(TIMES[1][0], TIMES[2][1]), SpeechSegment(*TIMES[6]), SpeechSegment(TIMES[10][0], None)]
    kept = [t for s in segments if isinstance(s, TextSegment) for t in s.ids]
    assert kept == [t for t, w in zip(tokens.ids, tokens.word_of) if w == TEMPLATE or not replaced[w]]
    with pytest.raises(Exception, match="one \\(start, end\\) time per transcript word"):
        build_segments(tokens, replaced, TIMES[:5])


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    encoder_dir, teacher_dir = make_model_dirs(tmp_path_factory.mktemp("models"))
    torch.manual_seed(0)
    return build_speech_llm(SpeechLLMConfig(), encoder_dir, teacher_dir)


def _embed(model, segments, feats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch = SpeechBatch(feats[None], torch.tensor([feats.shape[0]]), [segments], [[7, 8]])
    return model.embed(batch)


def test_interleaved_inputs_zero_and_full_ratio_equal_text_and_speech(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    model.eval()
    tokens = tokenize_prompt(tok, PROMPT, TEXT)
    feats = torch.randn(400, 80)  # 4 s: 100 Conformer frames, 50 connector frames of 80 ms
    text_only, mask, labels = _embed(model, [TextSegment(tokens.ids)], feats)
    zero, _, _ = _embed(model, build_segments(tokens, [False] * 11, TIMES), feats)
    assert torch.equal(zero, text_only)
    assert torch.equal(text_only[0, :len(tokens.ids)], model.llm.get_input_embeddings()(torch.tensor(tokens.ids)))
    assert labels[0].tolist() == [-100] * len(tokens.ids) + [7, 8] and mask.all()

    speech, speech_lens = model.encode_speech(feats[None], torch.tensor([400]))
    assert int(speech_lens[0]) == 50 and model.frame_shift == pytest.approx(0.08)
    prefix = tokens.word_of.index(0)
    suffix = len(tokens.ids) - 1 - tokens.word_of[::-1].index(10)
    full, _, full_labels = _embed(model, build_segments(tokens, [True] * 11, None), feats)
    expected = torch.cat([text_only[0, :prefix], speech[0], text_only[0, suffix + 1:len(tokens.ids) + 2]])
    assert torch.allclose(full[0], expected, atol=1e-6)
    assert (full_labels[0] != -100).sum() == 2

    replaced = [False] * 11
    replaced[3:5] = [True, True]  # 0.2 + 0.9 = 1.1 s to 0.45 + 1.2 = 1.65 s -> frames 13..21
    part, _, _ = _embed(model, build_segments(tokens, replaced, TIMES), feats)
    removed = sum(1 for w in tokens.word_of if w in (3, 4))
    assert part.shape[1] == len(tokens.ids) - removed + (21 - 13) + 2
    start = tokens.word_of.index(3)
    assert torch.allclose(part[0, start:start + 8], speech[0, 13:21], atol=1e-6)
    assert torch.equal(part[0, :start], text_only[0, :start])


def test_left_padding_for_generation(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    short, long = TextSegment([5, 6]), TextSegment([5, 6, 7, 8])
    batch = SpeechBatch(torch.zeros(2, 10, 80), torch.tensor([10, 10]), [[short], [long]], [[], []])
    embeds, mask, _ = model.embed(batch, pad_left=True)
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert torch.equal(embeds[0, 2:], embeds[1, :2])
