"""Training examples for behavior imitation, read lazily from the stage outputs.

An example is one line of ``targets.jsonl`` (a task prompt about one utterance and the
teacher's response) with the utterance's features (a stage-2 dir of either ``feats_type``: dumped,
or computed from the audio in the DataLoader worker that reads the item) and word times
(``word_align``, for interleaving). Only per-example numbers (byte offset, frames, utterance
number, text tokens) are kept in memory, in arrays, so memory stays flat in the corpus size; each
item is read from disk when asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mtbi.data.audio import FRAME_SHIFT
from mtbi.data.datadir import read_table
from mtbi.data.feature_dump import load_features, pad_features
from mtbi.data.speech_features import SpeechFeatures
from mtbi.data.word_align import WordAlignIndex
from mtbi.errors import MtbiError
from mtbi.models.interleave import InterleaveConfig, InterleavePolicy, build_segments
from mtbi.models.speech_llm import SpeechBatch
from mtbi.models.speech_prompt import TEMPLATE, tokenize_prompt
from mtbi.tasks.prompting import normalize_transcript

logger = logging.getLogger(__name__)

RESPONSES = ("teacher", "transcript")


@dataclass(frozen=True)
class DataConfig:
    """``data`` in a training config."""

    tasks: list[str] | None = None  # tasks trained with speech; None: every train task of the bank
    response: str = "teacher"       # teacher: imitate its answer; transcript: the reference (ASR SFT)
    interleave: InterleaveConfig = field(default_factory=InterleaveConfig)
    max_frames: int = 3000          # longer utterances (10 ms frames) are left out, and counted
    # The share of the training utterances trained on (0-1], chosen by a hash of the utterance id:
    # the same for every system and seed, and a smaller share is a subset of a larger one.
    utt_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.response not in RESPONSES:
            raise MtbiError(f"data.response '{self.response}': use one of {', '.join(RESPONSES)}")
        if not 0 < self.utt_fraction <= 1:
            raise MtbiError(f"data.utt_fraction {self.utt_fraction}: give a share in (0, 1]")


def in_utt_fraction(utt: str, fraction: float) -> bool:
    """Whether utterance ``utt`` is among the ``fraction`` of utterances kept: its id's hash,
    read as a number in [0, 1), is below ``fraction`` (so the subsets are nested)."""
    return fraction >= 1 or int.from_bytes(hashlib.sha256(utt.encode()).digest()[:8], "big") / 2 ** 64 < fraction


@dataclass
class Example:
    utt: str
    task: str
    feats: np.ndarray       # (T, n_mels), or (T', H) encoder outputs when ``encoded``
    segments: list
    response: list[int]
    text_prompt: list[int]  # the teacher's input ids (transcript as text)
    encoded: bool = False


def answer_text(record: dict, transcript: str, response: str) -> str:
    """What the SLLM learns to answer for the targets line ``record`` (``response``: DataConfig.response)."""
    return transcript if response == "transcript" else record["response"]


def ends_answer(record: dict, response: str, num_tokens: int) -> bool:
    """Whether the learned answer (``num_tokens`` long) ends with the end-of-sequence token: not
    for a teacher answer cut at ``max_new_tokens`` (the teacher had not finished). Targets written
    before stage 5 recorded ``truncated`` count as cut when they are ``gen.max_new_tokens`` long."""
    if response == "transcript":
        return True
    if "truncated" in record:
        return not record["truncated"]
    limit = (record.get("gen") or {}).get("max_new_tokens")
    return not (isinstance(limit, int) and num_tokens >= limit)


class TextTokens:
    """Per example, the LLM's input tokens besides the speech: the prompt's template tokens
    (counted once per prompt) and the response's, with eos if it ends; responses are tokenized
    ``chunk`` examples at a time (the tokenizer's batch call). ``empty`` lists the examples
    with nothing to learn: a cut answer of no tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, response: str, chunk: int = 4096) -> None:
        self.tokenizer, self.response, self.chunk = tokenizer, response, chunk
        self.counts = array("l")
        self._template: dict[str, int] = {}
        self._pending: list[tuple[int, dict]] = []
        self._answers: list[str] = []
        self.truncated = 0  # answers that do not end (cut at max_new_tokens)
        self.empty: list[int] = []

    def add(self, record: dict, where: str) -> None:
        """Count the targets line ``record`` (read at ``where``)."""
        try:
            transcript, prompt = normalize_transcript(record["transcript"]), record["prompt"]
            answer = answer_text(record, transcript, self.response)
        except (KeyError, TypeError, AttributeError):
            raise MtbiError(f"{where}: not a targets line; re-run stage 5") from None
        if prompt not in self._template:
            self._template[prompt] = tokenize_prompt(self.tokenizer, prompt, transcript).word_of.count(TEMPLATE)
        self._pending.append((self._template[prompt], record))
        self._answers.append(answer)
        if len(self._answers) == self.chunk:
            self._flush()

    def finish(self) -> array:
        """The counts of the lines added, in order."""
        self._flush()
        return self.counts

    def _flush(self) -> None:
        if self._answers:
            ids = self.tokenizer(self._answers, add_special_tokens=False)["input_ids"]
            for (template, record), answer_ids in zip(self._pending, ids):
                ends = ends_answer(record, self.response, len(answer_ids))
                if not ends:
                    if answer_ids:
                        self.truncated += 1
                    else:
                        self.empty.append(len(self.counts))
                self.counts.append(template + len(answer_ids) + ends)
            self._pending, self._answers = [], []


class ImitationDataset(torch.utils.data.Dataset):
    """Examples of ``targets.jsonl`` whose task is in ``tasks`` and whose utterance has features.

    Items are asked for as ``(index, seed, batch number)`` (the samplers' items): ``seed`` drives
    the interleaving choice, and the batch number gives the training step (``batches_per_step``
    batches a step, the gradient accumulation) for an interleaving curriculum, so an item is the
    same whenever it is read again (exact resume).
    """

    def __init__(self, feats_dir: str | Path, targets: str | Path, tokenizer: PreTrainedTokenizerBase,
                 tasks: list[str], config: DataConfig, word_align: str | Path | None = None,
                 encoded_dir: str | Path | None = None, batches_per_step: int = 1) -> None:
        self.feats_dir, self.targets = Path(feats_dir), Path(targets)
        self.tokenizer, self.config, self.batches_per_step = tokenizer, config, batches_per_step
        self.policy = InterleavePolicy(config.interleave)
        if not self.targets.is_file():
            raise MtbiError(f"{self.targets} is missing; it is made by stage 5")
        self.features = SpeechFeatures(self.feats_dir)
        # With the frozen encoder's outputs cached, items carry them instead of the features
        # (lengths and filters still count 10 ms feature frames).
        self.encoded = encoded_dir is not None
        if self.encoded:
            encoded_scp = Path(encoded_dir) / "feats.scp"
            if not encoded_scp.is_file():
                raise MtbiError(f"{encoded_scp} is missing; it is made by stage 6 (mtbi.bin.encode_feats)")
            cached = read_table(encoded_scp)
            self.encoded_scp = {u: cached[u] for u in self.features.utts if u in cached}
        usable = self.encoded_scp if self.encoded else self.features
        num_frames = self.features.num_frames
        self.offsets, self.lengths = array("q"), array("l")
        # For the batch sampler: each example's utterance (numbered) and LLM tokens besides the speech.
        self.utt_index, text_tokens, utt_numbers = array("l"), TextTokens(tokenizer, config.response), {}
        counts = {"outside utt_fraction": 0, "no features": 0, "too long": 0}
        wanted = set(tasks)
        with open(self.targets, "rb") as f:
            offset = 0
            for lineno, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    utt, task = record["utt"], record["task"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise MtbiError(f"{self.targets}:{lineno}: not a targets line; re-run stage 5") from None
                if task in wanted:
                    if not in_utt_fraction(utt, config.utt_fraction):
                        counts["outside utt_fraction"] += 1
                    elif utt not in usable:
                        counts["no features"] += 1
                    elif num_frames[utt] > config.max_frames:
                        counts["too long"] += 1
                    else:
                        self.offsets.append(offset)
                        self.lengths.append(num_frames[utt])
                        self.utt_index.append(utt_numbers.setdefault(utt, len(utt_numbers)))
                        text_tokens.add(record, f"{self.targets}:{lineno}")
                offset += len(line)
        self.text_tokens = text_tokens.finish()
        counts["empty cut answers"] = len(text_tokens.empty)
        self._leave_out(set(text_tokens.empty))
        left_out = ", ".join(f"{v} {k}" for k, v in counts.items())
        if not self.offsets:
            raise MtbiError(f"{self.targets}: no usable target of the tasks {sorted(wanted)} with features in "
                            f"{self.feats_dir} ({left_out} left out); check data.tasks, data.max_frames, "
                            "and stages 2 and 5")
        interleaving = config.interleave.prob > 0  # word times are read only to interleave
        self.word_align = WordAlignIndex(word_align) if word_align and interleaving else None
        if interleaving and not self.word_align:
            raise MtbiError(f"interleaving needs word alignments; {word_align} is missing or empty "
                            "(made by stage 3)")
        logger.info("%s: %d examples of %d tasks (%s left out; %d answers cut at max_new_tokens, learned "
                    "without end-of-sequence)", self.targets, len(self.offsets), len(wanted),
                    left_out, text_tokens.truncated)
        self._targets_file = None

    def _leave_out(self, positions: set[int]) -> None:
        """Drop the examples at ``positions`` (in reading order) from the index arrays."""
        if positions:
            for name in ("offsets", "lengths", "utt_index", "text_tokens"):
                values = getattr(self, name)
                setattr(self, name, array(values.typecode, (v for i, v in enumerate(values) if i not in positions)))

    def __len__(self) -> int:
        return len(self.offsets)

    def summary(self) -> dict:
        """What the examples are made of: their number, their utterances and its hours of speech."""
        frames = dict(zip(self.utt_index, self.lengths))
        return {"examples": len(self), "utterances": len(frames),
                "hours": round(sum(frames.values()) * FRAME_SHIFT / 3600, 3)}

    def _record(self, index: int) -> dict:
        if self._targets_file is None:  # opened lazily: one handle per DataLoader worker
            self._targets_file = open(self.targets, "rb")
        self._targets_file.seek(self.offsets[index])
        return json.loads(self._targets_file.readline())

    def __getitem__(self, item: tuple[int, int, int]) -> Example:
        index, seed, batch = item
        record = self._record(index)
        transcript = normalize_transcript(record["transcript"])
        tokens = tokenize_prompt(self.tokenizer, record["prompt"], transcript)
        replaced = [True] * tokens.num_words
        if self.config.interleave.prob > 0:
            times = self.word_align.times(record["utt"])
            if times is not None and len(times) == tokens.num_words:
                replaced = self.policy.choose(tokens.num_words, random.Random(seed), batch // self.batches_per_step)
        else:
            times = None
        segments = build_segments(tokens, replaced, times)
        answer = answer_text(record, transcript, self.config.response)
        response = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if ends_answer(record, self.config.response, len(response)):
            response.append(self.tokenizer.eos_token_id)
        utt = record["utt"]
        feats = load_features(utt, self.encoded_scp[utt]) if self.encoded else self.features.load(utt)
        return Example(record["utt"], record["task"], feats, segments, response, tokens.ids, self.encoded)


def collate(examples: list[Example], with_text_prompts: bool = False) -> SpeechBatch:
    """Pad the features of ``examples`` into one :class:`SpeechBatch`."""
    feats, lens = pad_features([e.feats for e in examples])
    return SpeechBatch(feats, lens, [e.segments for e in examples], [e.response for e in examples],
                       [e.text_prompt for e in examples] if with_text_prompts else None, examples[0].encoded)
