"""CtcModel: a speech encoder with a linear CTC head over characters.

Stage 4 CTC-pretrains the tiny Conformer with it; CTC alignment (stage 3 on real corpora)
and the encoder's WER use it too. The vocabulary is ``<blank>`` (index 0), ``|`` (the word
separator), then the lower-case letters and apostrophe seen in the training text.

Saved as an encoder dir (:mod:`mtbi.models.encoders`) plus ``ctc_vocabulary.txt``, with the
head's weights under ``ctc_head.`` in ``model.safetensors``: :func:`load_speech_encoder` on
the dir gives the encoder alone, :meth:`CtcModel.from_pretrained` the whole model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from mtbi.errors import MtbiError
from mtbi.models.encoders import SpeechEncoder, load_encoder_weights, load_speech_encoder, save_encoder
from mtbi.stage import atomic_write

BLANK = "<blank>"
WORD_SEPARATOR = "|"
VOCABULARY_FILE = "ctc_vocabulary.txt"
HEAD_PREFIX = "ctc_head."


def build_vocabulary(texts: Iterable[str]) -> list[str]:
    """``<blank>``, ``|``, then every lower-case letter or apostrophe of ``texts``, sorted."""
    chars = {c for text in texts for c in text.lower() if c.isalpha() or c == "'"}
    return [BLANK, WORD_SEPARATOR] + sorted(chars)


class CtcModel(torch.nn.Module):
    """``encoder`` -> linear -> log-softmax over ``vocabulary``."""

    def __init__(self, encoder: SpeechEncoder, vocabulary: list[str]) -> None:
        super().__init__()
        if vocabulary[:2] != [BLANK, WORD_SEPARATOR] or len(set(vocabulary)) != len(vocabulary):
            raise MtbiError(f"a CTC vocabulary starts with {BLANK} and {WORD_SEPARATOR} and has no "
                            f"repeated entries, got {vocabulary[:5]}...")
        self.encoder = encoder
        self.vocabulary = list(vocabulary)
        self.ctc_head = torch.nn.Linear(encoder.output_size, len(vocabulary))
        self._ids = {token: i for i, token in enumerate(vocabulary)}

    @property
    def frame_shift(self) -> float:
        """Seconds per output frame (the encoder's)."""
        return self.encoder.frame_shift

    def text_to_ids(self, text: str) -> list[int]:
        """Token ids of ``text``: lower-cased, spaces as ``|``, unknown characters dropped."""
        chars = WORD_SEPARATOR.join(text.lower().split())
        ids = [self._ids[c] for c in chars if c in self._ids]
        return _strip_separators(ids, self._ids[WORD_SEPARATOR])

    def normalize_text(self, text: str) -> str:
        """``text`` as the model can write it (the reference for its WER)."""
        return self.ids_to_text(self.text_to_ids(text))

    def ids_to_text(self, ids: list[int]) -> str:
        """Words of the token ids ``ids`` (blanks skipped, ``|`` as a space)."""
        chars = "".join(self.vocabulary[i] for i in ids if i != 0)
        return " ".join(chars.replace(WORD_SEPARATOR, " ").split())

    def log_probs(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, n_mels)``, ``(B,)`` -> log-softmax ``(B, T', V)`` and output lengths ``(B,)``."""
        hidden, lens = self.encoder(feats, feats_lens)
        return self.ctc_head(hidden).log_softmax(dim=-1), lens

    def loss(self, feats: torch.Tensor, feats_lens: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """CTC loss summed over each utterance, averaged over the batch."""
        log_probs, lens = self.log_probs(feats, feats_lens)
        target_lens = torch.tensor([len(t) for t in targets])
        flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), flat, lens.cpu(), target_lens,
                                            blank=0, reduction="sum", zero_infinity=True)
        return loss / len(targets)

    @torch.no_grad()
    def greedy_decode(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> list[str]:
        """Best path per utterance: repeats collapsed, blanks dropped, ``|`` as spaces."""
        log_probs, lens = self.log_probs(feats, feats_lens)
        best = log_probs.argmax(dim=-1).cpu()
        texts = []
        for row, length in zip(best, lens.tolist()):
            path = torch.unique_consecutive(row[:length]).tolist()
            texts.append(self.ids_to_text(path))
        return texts

    def save_pretrained(self, model_dir: str | Path) -> None:
        """Write the encoder dir ``model_dir`` with the head and ``ctc_vocabulary.txt``."""
        model_dir = Path(model_dir)
        head = {HEAD_PREFIX + k: v for k, v in self.ctc_head.state_dict().items()}
        save_encoder(model_dir, self.encoder, extra_tensors=head)
        with atomic_write(model_dir / VOCABULARY_FILE) as f:
            f.writelines(token + "\n" for token in self.vocabulary)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> CtcModel:
        """The CTC model saved in ``model_dir`` by :meth:`save_pretrained`, in eval mode."""
        model_dir = Path(model_dir)
        vocabulary_file = model_dir / VOCABULARY_FILE
        if not vocabulary_file.is_file():
            raise MtbiError(f"{vocabulary_file} is missing: {model_dir} holds no CTC model "
                            "(stage 4 writes one for an encoder of kind conformer)")
        vocabulary = vocabulary_file.read_text(encoding="utf-8").split("\n")[:-1]
        model = cls(load_speech_encoder(model_dir), vocabulary)
        head = {k[len(HEAD_PREFIX):]: v for k, v in load_encoder_weights(model_dir).items()
                if k.startswith(HEAD_PREFIX)}
        try:
            model.ctc_head.load_state_dict(head, strict=True)
        except RuntimeError as err:
            raise MtbiError(f"{model_dir}: the CTC head's weights do not match {vocabulary_file} "
                            f"({str(err).splitlines()[0]}); re-run stage 4") from None
        return model.eval()


def _strip_separators(ids: list[int], separator: int) -> list[int]:
    """Drop leading, trailing and repeated separators (left by dropped characters)."""
    kept: list[int] = []
    for i in ids:
        if i == separator and (not kept or kept[-1] == separator):
            continue
        kept.append(i)
    if kept and kept[-1] == separator:
        kept.pop()
    return kept
