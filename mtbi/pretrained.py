"""A trained SLLM for users: load it, and ask it anything about audio::

    from mtbi import SpeechLLM
    model = SpeechLLM.from_pretrained("exp/sllm_mtbi")
    print(model.answer("a.flac", "Summarize what is said."))

``audio`` is a path (any format soundfile reads; resampled to 16 kHz, channels averaged), a numpy
array of samples, ``(N,)``, ``(N, channels)`` as soundfile reads them or ``(channels, N)``, with its rate
(``(samples, rate)``, or ``sample_rate=``), or a list of them (answered in batches). The speech
goes into the question's ``{transcript}`` slot if it has one, as in training (the task bank's
prompts); else after the question, separated by a space (every training prompt ends with its
slot). The question is the user turn of the LLM's
chat template. Answers are greedy with the teacher's ``max_new_tokens`` unless ``generation``
keywords (those of ``transformers`` ``generate``) say otherwise.

Stage 7 answers the benchmark through :meth:`SpeechLLM.generate`, with the same features
(log-mel of the 16 kHz samples), prompt rendering and decoding, so an answer equals the
benchmark's to the same question.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mtbi.data.audio import to_mono_16k
from mtbi.data.feature_dump import pad_features
from mtbi.data.features import speech_log_mel
from mtbi.data.speech_features import audio_file_log_mel
from mtbi.errors import MtbiError
from mtbi.models.interleave import Segment, build_segments
from mtbi.models.speech_llm import SpeechBatch, SpeechLLMModel
from mtbi.models.speech_prompt import tokenize_prompt
from mtbi.tasks.generation import GenerationParams
from mtbi.tasks.prompting import with_speech_slot

Audio = Union[str, Path, np.ndarray, tuple[np.ndarray, int]]
PLACEHOLDER = "speech"  # the transcript slot's stand-in; all of its tokens become speech frames
MAX_CHANNELS = 8  # a 2-D array with at most this many rows and more columns is (channels, samples)


def speech_segments(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[Segment]:
    """The rendered prompt's segments with the transcript slot as speech: text, speech, text."""
    tokens = tokenize_prompt(tokenizer, prompt, PLACEHOLDER)
    return build_segments(tokens, [True] * tokens.num_words, None)


@dataclass(frozen=True)
class AnswerBatch:
    """One batch of questions: ``asked`` (their indices), ``inputs`` (the audio inputs they ask
    about, sorted, each encoded once) and ``rows`` (per question, its input's row in ``inputs``)."""

    asked: list[int]
    inputs: list[Any]
    rows: list[int]


def plan_batches(inputs: Sequence[Hashable], lengths: Mapping[Any, int], batch_size: int,
                 keys: Sequence[Any] | None = None) -> list[AnswerBatch]:
    """Batches of ``batch_size`` questions of similar length, question ``k`` asking about audio
    input ``inputs[k]`` of ``lengths[inputs[k]]`` frames: longest first, ties by ``keys[k]``
    (default: ``k``), so that a batch pads little and questions about one input share its encoding."""
    ties = range(len(inputs)) if keys is None else keys
    order = sorted(range(len(inputs)), key=lambda k: (-lengths[inputs[k]], ties[k]))
    batches = []
    for start in range(0, len(order), batch_size):
        asked = order[start:start + batch_size]
        distinct = sorted({inputs[k] for k in asked})
        batches.append(AnswerBatch(asked, distinct, [distinct.index(inputs[k]) for k in asked]))
    return batches


def _is_one_audio(audio: object) -> bool:
    """Whether ``audio`` is one input (a path, an array, or an array with its rate), not a list of them."""
    if isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[1], (int, np.integer)):
        return not isinstance(audio[0], (str, Path))
    return isinstance(audio, (str, Path, np.ndarray))


def _samples(audio: np.ndarray | tuple[np.ndarray, int], sample_rate: int | None) -> np.ndarray:
    """16 kHz mono float32 samples of an array with its rate."""
    if isinstance(audio, tuple):
        audio, sample_rate = audio
    if sample_rate is None:
        raise MtbiError("audio given as an array of samples needs its sample rate: pass (samples, rate) "
                        "or sample_rate=")
    samples = np.asarray(audio)
    if np.issubdtype(samples.dtype, np.unsignedinteger):  # offset PCM (8-bit WAV) to [-1, 1)
        middle = (int(np.iinfo(samples.dtype).max) + 1) // 2
        samples = (samples.astype(np.float64) - middle) / middle
    elif np.issubdtype(samples.dtype, np.integer):  # PCM integers to [-1, 1)
        samples = samples / float(-np.iinfo(samples.dtype).min)
    if samples.ndim == 2 and samples.shape[0] <= MAX_CHANNELS < samples.shape[1]:
        samples = samples.T  # channels first, as torchaudio and librosa give them
    samples = samples.astype(np.float32).reshape(samples.shape[0], -1)  # (N, channels)
    return to_mono_16k("<samples>", samples, int(sample_rate), allow_upsample=True)


class SpeechLLM:
    """A trained speech LLM (encoder -> connector -> frozen LLM) that answers questions about audio."""

    def __init__(self, model: SpeechLLMModel, tokenizer: PreTrainedTokenizerBase,
                 generation: GenerationParams | None = None, weights: Path | None = None) -> None:
        """``generation``: the default decoding (the teacher's); ``weights``: the file the trained
        weights were loaded from."""
        self.model, self.tokenizer, self.weights = model.eval(), tokenizer, weights
        self.generation = generation or GenerationParams()
        self._segments: dict[str, list[Segment]] = {}

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, checkpoint: str | None = None, device: str = "cpu",
                        revision: str | None = None, generation: GenerationParams | None = None) -> "SpeechLLM":
        """The model of a trained SLLM dir (stage 6's ``exp/sllm_<tag>``), an exported one
        (``mtbi.bin.export``), or a hub repo of an exported one (``revision``: its branch, tag or
        commit); ``checkpoint``: ``checkpoints/<name>`` instead of the final weights;
        ``generation``: the default decoding instead of the one the dir records (its teacher's)."""
        from mtbi.hub import resolve_model
        from mtbi.train.sllm_dir import SLLM_FILES, generation_params, load_sllm, weights_path

        model_dir = resolve_model(str(model_dir), revision, what="model_dir", patterns=SLLM_FILES).path
        model, tokenizer = load_sllm(model_dir, checkpoint, torch.device(device))
        return cls(model, tokenizer, generation or generation_params(model_dir), weights_path(model_dir, checkpoint))

    @property
    def identity(self) -> str | None:
        """The loaded weights' identity for stamps (path, size, modification time)."""
        from mtbi.stage import file_id

        return file_id(self.weights) if self.weights else None

    @property
    def device(self) -> torch.device:
        return next(self.model.connector.parameters()).device

    @property
    def n_mels(self) -> int:
        """The mel bins of the encoder's log-mel features."""
        return self.model.encoder.config.n_mels

    def features(self, audio: Audio, sample_rate: int | None = None) -> torch.Tensor:
        """The log-mel features ``(T, n_mels)`` of one audio input, as stage 2 computes them."""
        if isinstance(audio, (str, Path)):
            return audio_file_log_mel(audio, self.n_mels, str(audio))
        return speech_log_mel(_samples(audio, sample_rate), self.n_mels, "audio samples")

    def answer(self, audio: Audio | Sequence[Audio], question: str | Sequence[str], *,
               sample_rate: int | None = None, batch_size: int | None = None, **generation) -> str | list[str]:
        """The answer to ``question`` about ``audio``: one string for one audio input and one
        question, else a list, one answer per audio input (one question for all, or one each) or
        per question (one audio input)."""
        single_audio = _is_one_audio(audio)
        audios = [audio] if single_audio else list(audio)
        questions = [question] if isinstance(question, str) else list(question)
        if not audios or not questions:
            raise MtbiError("nothing to answer: give at least one audio input and one question")
        if single_audio:
            asked = [(0, q) for q in questions]
        elif len(questions) in (1, len(audios)):
            asked = [(k, questions[0] if len(questions) == 1 else questions[k]) for k in range(len(audios))]
        else:
            raise MtbiError(f"{len(audios)} audio inputs and {len(questions)} questions: give one question "
                            "for all, or one per audio input")
        answers = self.answer_features([self.features(a, sample_rate) for a in audios], asked, batch_size,
                                       **generation)
        return answers[0] if single_audio and isinstance(question, str) else answers

    def answer_features(self, feats: Sequence[torch.Tensor], asked: Sequence[tuple[int, str]],
                        batch_size: int | None = None, **generation) -> list[str]:
        """The answers to ``asked``, pairs (index into ``feats``, question), in their order: in
        batches of ``batch_size`` (default: the teacher's) of similar length, each audio input
        encoded once a batch."""
        plan = plan_batches([i for i, _ in asked], {i: f.shape[0] for i, f in enumerate(feats)},
                            batch_size or self.generation.batch_size)
        answers = [""] * len(asked)
        for batch in plan:
            padded, lens = pad_features([feats[i] for i in batch.inputs])
            texts = self.generate(padded, lens, [asked[k][1] for k in batch.asked], batch.rows, **generation)
            for k, text in zip(batch.asked, texts):
                answers[k] = text
        return answers

    def stream(self, audio: Audio, question: str, *, sample_rate: int | None = None, **generation) -> Iterator[str]:
        """The answer to ``question`` about one audio input, in pieces as they are generated."""
        from transformers import TextIteratorStreamer

        feats = self.features(audio, sample_rate)
        embeds, mask = self._prompt_embeddings(feats[None], torch.tensor([feats.shape[0]]), [question], [0])
        decoding = self._decoding(generation)
        if decoding.get("num_beams", 1) > 1:
            raise MtbiError("a streamed answer is generated token by token: use answer() for beam search")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.llm.generate(inputs_embeds=embeds, attention_mask=mask, streamer=streamer, **decoding)
            except BaseException as err:  # re-raised in the caller's thread, after the pieces so far
                failed.append(err)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if failed:
            raise failed[0]

    @torch.inference_mode()
    def generate(self, feats: torch.Tensor, feats_lens: torch.Tensor, questions: Sequence[str],
                 rows: Sequence[int] | None = None, **generation) -> list[str]:
        """One batch: the answer to ``questions[k]`` about utterance ``rows[k]`` (default ``k``) of
        the padded features ``(B, T, n_mels)``; each utterance is encoded once."""
        rows = list(range(len(questions))) if rows is None else list(rows)
        embeds, mask = self._prompt_embeddings(feats, feats_lens, questions, rows)
        output = self.model.llm.generate(inputs_embeds=embeds, attention_mask=mask, **self._decoding(generation))
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    @torch.inference_mode()
    def _prompt_embeddings(self, feats: torch.Tensor, feats_lens: torch.Tensor, questions: Sequence[str],
                           rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded input embeddings and attention mask of the questions with their speech."""
        feats, feats_lens = feats.to(self.device), feats_lens.to(self.device)
        frames, frame_lens = self.model.encode_speech(feats, feats_lens)
        index = torch.tensor(rows, device=self.device)
        batch = SpeechBatch(feats[index], feats_lens[index], [self._prompt_segments(q) for q in questions],
                            [[] for _ in questions])
        embeds, mask, _ = self.model.embed(batch, pad_left=True, speech=(frames[index], frame_lens[index]))
        return embeds, mask

    def _prompt_segments(self, question: str) -> list[Segment]:
        if question not in self._segments:
            self._segments[question] = speech_segments(self.tokenizer, with_speech_slot(question))
        return self._segments[question]

    def _decoding(self, generation: dict) -> dict:
        """``generate`` keywords: the model's defaults (greedy, the teacher's max_new_tokens) under ``generation``."""
        if generation.get("num_return_sequences", 1) != 1:
            raise MtbiError("one answer per question: num_return_sequences must be 1 (ask again to sample others)")
        return {"do_sample": self.generation.do_sample, "max_new_tokens": self.generation.max_new_tokens,
                "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id,
                **generation}
