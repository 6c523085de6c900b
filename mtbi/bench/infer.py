"""Stage 7, part 2: answer the benchmark, with speech input (an SLLM) or text input (the teacher).

With speech input the SLLM reads the task prompt with the whole transcript replaced by the
utterance's speech, exactly as in training but without the transcript (:class:`mtbi.pretrained.SpeechLLM`,
the class users ask their own questions with). With text input the teacher reads the
transcript itself: the upper bound of behavior imitation.

Answers are greedy, in length-sorted, left-padded batches with a KV cache (``generate``),
appended to ``hyp.partial.jsonl`` a chunk at a time, so a killed run resumes where it
stopped; the finished ``hyp.jsonl`` is sorted by (utt, task, prompt_id)::

    {"utt", "task", "prompt_id", "split", "input", "hyp", "ref", "prompt", "transcript"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from mtbi.bench.build import BenchItem
from mtbi.data.speech_features import FeatureSource
from mtbi.errors import MtbiError
from mtbi.pretrained import SpeechLLM, plan_batches
from mtbi.stage import answer_to_file
from mtbi.tasks.generation import GenerationParams, Generator
from mtbi.tasks.prompting import render_prompt, with_speech_slot
from mtbi.tasks.records import record_key

INPUTS = ("speech", "text")


class Answerer(Protocol):
    input: str

    def answer(self, items: list[BenchItem]) -> list[str]: ...


class SpeechAnswerer:
    """Greedy answers of an SLLM to benchmark items, from the utterances' features."""

    input = "speech"

    def __init__(self, sllm: SpeechLLM, features: FeatureSource, params: GenerationParams) -> None:
        self.sllm, self.features, self.params = sllm, features, params

    def answer(self, items: list[BenchItem]) -> list[str]:
        """Answers to ``items`` in their order, generated in batches of similar length (features
        read, or computed from the audio, by a DataLoader worker while the model answers); several
        prompts ask about the same utterance, and each utterance is encoded once a batch."""
        missing = sorted(u for u in {i.utt for i in items} if u not in self.features)
        if missing:
            raise MtbiError(f"utterance '{missing[0]}' (and {len(missing) - 1} more) of the benchmark has no "
                            "features; run stage 2 for the test set")
        plan = plan_batches([i.utt for i in items], self.features.num_frames, self.params.batch_size,
                            [i.key for i in items])
        answers = [""] * len(items)
        for batch, (_, padded, lens) in zip(plan, self.features.batches([b.inputs for b in plan])):
            texts = self.sllm.generate(padded, lens, [items[k].prompt for k in batch.asked], batch.rows,
                                       max_new_tokens=self.params.max_new_tokens, do_sample=self.params.do_sample)
            for k, answer in zip(batch.asked, texts):
                answers[k] = answer
        return answers


class TextAnswerer:
    """The teacher's greedy answers to benchmark items, from the transcripts."""

    input = "text"

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def answer(self, items: list[BenchItem]) -> list[str]:
        tokenizer = self.generator.tokenizer
        return self.generator.generate([render_prompt(tokenizer, with_speech_slot(i.prompt), i.transcript)
                                        for i in items])


def run_inference(items: list[BenchItem], answerer: Answerer, out_dir: str | Path, stamp: dict,
                  chunk_size: int = 512) -> Path:
    """Answer ``items`` into ``out_dir/hyp.jsonl`` (resumable; ``stamp`` names the model and
    the benchmark, and a finished run with the same stamp is skipped). Returns its path."""

    def record(i: BenchItem, hyp: str) -> dict:
        extra = {"choices": i.choices} if i.choices is not None else {}
        return {"utt": i.utt, "task": i.task, "prompt_id": i.prompt_id, "split": i.split, "input": answerer.input,
                "hyp": hyp, "ref": i.ref, "prompt": i.prompt, "transcript": i.transcript, **extra}

    return answer_to_file(Path(out_dir) / "hyp.jsonl", stamp, items, answerer.answer, record, record_key,
                          chunk_size, f"{answerer.input} inference")
