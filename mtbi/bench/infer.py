"""Stage 7, part 2: answer the benchmark, with speech input (an SLLM) or text input (the teacher).

With speech input the SLLM reads the task prompt with the whole transcript replaced by the
utterance's speech, exactly as in training but without the transcript: the prompt is
tokenized around a placeholder word whose tokens all become speech. With text input the
teacher reads the transcript itself: the upper bound of behavior imitation.

Answers are greedy, in length-sorted, left-padded batches with a KV cache (``generate``),
appended to ``hyp.partial.jsonl`` a chunk at a time, so a killed run resumes where it
stopped; the finished ``hyp.jsonl`` is sorted by (utt, task, prompt_id)::

    {"utt", "task", "prompt_id", "split", "input", "hyp", "ref", "prompt", "transcript"}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from mtbi.bench.build import BenchItem
from mtbi.data.speech_features import SpeechFeatures
from mtbi.errors import MtbiError
from mtbi.models.interleave import Segment, build_segments
from mtbi.models.speech_llm import SpeechBatch, SpeechLLM
from mtbi.models.speech_prompt import tokenize_prompt
from mtbi.stage import Step, answer_resumably, atomic_write, marker, stamp_file
from mtbi.tasks.generation import GenerationParams, Generator
from mtbi.tasks.prompting import render_prompt
from mtbi.tasks.records import record_key

logger = logging.getLogger(__name__)

INPUTS = ("speech", "text")
PLACEHOLDER = "speech"  # the transcript slot's stand-in; all of its tokens become speech frames


class Answerer(Protocol):
    input: str

    def answer(self, items: list[BenchItem]) -> list[str]: ...


def speech_segments(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[Segment]:
    """The prompt's segments with the transcript slot as speech: text before, speech, text after."""
    tokens = tokenize_prompt(tokenizer, prompt, PLACEHOLDER)
    return build_segments(tokens, [True] * tokens.num_words, None)


class SpeechAnswerer:
    """Greedy answers of an SLLM to benchmark items, from the utterances' features."""

    input = "speech"

    def __init__(self, model: SpeechLLM, tokenizer: PreTrainedTokenizerBase, feats_dir: str | Path,
                 params: GenerationParams, device: str = "cpu") -> None:
        self.model, self.tokenizer, self.params = model, tokenizer, params
        self.device = torch.device(device)
        self.features = SpeechFeatures(feats_dir)
        self._segments: dict[str, list[Segment]] = {}

    def _prompt_segments(self, prompt: str) -> list[Segment]:
        if prompt not in self._segments:
            self._segments[prompt] = speech_segments(self.tokenizer, prompt)
        return self._segments[prompt]

    @torch.inference_mode()
    def _answer_batch(self, items: list[BenchItem], utts: list[str], padded: torch.Tensor,
                      lens: torch.Tensor) -> list[str]:
        """Answers to ``items``, whose utterances ``utts`` have the features ``padded``: several prompts
        ask about the same utterance, and each utterance is encoded once."""
        padded, lens = padded.to(self.device), lens.to(self.device)
        frames, frame_lens = self.model.encode_speech(padded, lens)
        rows = torch.tensor([utts.index(i.utt) for i in items], device=self.device)
        batch = SpeechBatch(padded[rows], lens[rows], [self._prompt_segments(i.prompt) for i in items],
                            [[] for _ in items])
        embeds, mask, _ = self.model.embed(batch, pad_left=True, speech=(frames[rows], frame_lens[rows]))
        output = self.model.llm.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                         max_new_tokens=self.params.max_new_tokens,
                                         pad_token_id=self.tokenizer.pad_token_id,
                                         eos_token_id=self.tokenizer.eos_token_id)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def answer(self, items: list[BenchItem]) -> list[str]:
        """Answers to ``items`` in their order, generated in batches of similar length (features
        read, or computed from the audio, by a DataLoader worker while the model answers)."""
        missing = sorted(u for u in {i.utt for i in items} if u not in self.features)
        if missing:
            raise MtbiError(f"utterance '{missing[0]}' (and {len(missing) - 1} more) of the benchmark has no "
                            "features; run stage 2 for the test set")
        order = sorted(range(len(items)), key=lambda k: (-self.features.num_frames[items[k].utt], items[k].key))
        chunks = [order[start:start + self.params.batch_size] for start in range(0, len(order), self.params.batch_size)]
        chunk_utts = [sorted({items[k].utt for k in chunk}) for chunk in chunks]
        answers = [""] * len(items)
        for chunk, (utts, padded, lens) in zip(chunks, self.features.batches(chunk_utts)):
            for k, answer in zip(chunk, self._answer_batch([items[k] for k in chunk], utts, padded, lens)):
                answers[k] = answer
        return answers


class TextAnswerer:
    """The teacher's greedy answers to benchmark items, from the transcripts."""

    input = "text"

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def answer(self, items: list[BenchItem]) -> list[str]:
        tokenizer = self.generator.tokenizer
        return self.generator.generate([render_prompt(tokenizer, i.prompt, i.transcript) for i in items])


def run_inference(items: list[BenchItem], answerer: Answerer, out_dir: str | Path, stamp: dict,
                  chunk_size: int = 512) -> Path:
    """Answer ``items`` into ``out_dir/hyp.jsonl`` (resumable; ``stamp`` names the model and
    the benchmark, and a finished run with the same stamp is skipped). Returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final, partial = out_dir / "hyp.jsonl", out_dir / "hyp.partial.jsonl"
    step = Step(marker(out_dir, "hyp"), stamp, outputs=[final])
    if step.skip(f"{final} is already done"):
        return final

    def record(i: BenchItem, hyp: str) -> dict:
        return {"utt": i.utt, "task": i.task, "prompt_id": i.prompt_id, "split": i.split, "input": answerer.input,
                "hyp": hyp, "ref": i.ref, "prompt": i.prompt, "transcript": i.transcript}

    answer_resumably(partial, stamp, items, answerer.answer, record, record_key, chunk_size,
                     f"{answerer.input} inference")
    with open(partial, encoding="utf-8") as f:
        records = sorted((json.loads(line) for line in f), key=record_key)
    with atomic_write(final) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    partial.unlink()
    stamp_file(partial).unlink()
    step.mark_done()
    return final
