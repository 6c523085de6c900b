"""Ask a trained SLLM anything about audio.

One file, the answer on stdout:
  python -m mtbi.bin.ask --model_dir exp/sllm_mtbi --wav a.flac --question "Summarize what is said."

Many: every question of --questions (one a line) or --question, about every utterance of a
wav.scp (or a data dir: its segments apply), into a jsonl file of
{"utt", "question_id" (its number in the file, blank lines skipped), "question", "answer"}
lines, sorted; resumable:
  python -m mtbi.bin.ask --model_dir exp/sllm_mtbi --wav_scp data/test/wav.scp \\
      --questions questions.txt --out answers.jsonl

The model dir is stage 6's exp/sllm_<tag>, an exported dir (mtbi.bin.export) or its hub id.
A question with a {transcript} slot gets the speech there, else after the question. Audio: any
format soundfile reads, any sample rate (resampled to 16 kHz), channels averaged.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mtbi.cli import run_main
from mtbi.errors import MtbiError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="exp/sllm_<tag>, an exported dir, or a hub id")
    parser.add_argument("--revision", default=None, help="a hub id's branch, tag or commit")
    parser.add_argument("--checkpoint", default=None, help="checkpoints/<name> instead of the final weights")
    audio = parser.add_mutually_exclusive_group(required=True)
    audio.add_argument("--wav", help="one audio file: its answer goes to stdout")
    audio.add_argument("--wav_scp", help="a wav.scp (utt path or command per line) or a data dir: answers go to --out")
    questions = parser.add_mutually_exclusive_group(required=True)
    questions.add_argument("--question", help="the question")
    questions.add_argument("--questions", help="with --wav_scp: a text file, one question a line")
    parser.add_argument("--out", default=None, help="with --wav_scp: the answers' jsonl file")
    parser.add_argument("--stream", action="store_true", help="with --wav: print the answer as it is generated")
    parser.add_argument("--max_new_tokens", type=int, default=0, help="0: the model's (its teacher's)")
    parser.add_argument("--batch_size", type=int, default=0, help="answers per batch (0: the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser


@dataclass(frozen=True)
class Question:
    """One question about one utterance of a batch run."""

    utt: str
    question_id: int
    text: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.utt, self.question_id)


def read_questions(path: str | Path) -> list[str]:
    """The questions of a text file, one a line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise MtbiError(f"{path}: file not found; give a text file with one question a line")
    questions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not questions:
        raise MtbiError(f"{path} has no questions")
    return questions


def ask_many(sllm, args: argparse.Namespace, generation: dict) -> None:
    """Answer every question about every utterance of ``--wav_scp`` into ``--out`` (resumable)."""
    from mtbi.data.wav_scp import AudioTable
    from mtbi.stage import answer_to_file

    table = AudioTable(args.wav_scp, allow_upsample=True)
    texts = read_questions(args.questions) if args.questions else [args.question]
    items = [Question(utt, k, text) for utt in table.utts for k, text in enumerate(texts, 1)]
    scp = Path(args.wav_scp) if Path(args.wav_scp).is_file() else Path(args.wav_scp) / "wav.scp"
    stamp = {"model": sllm.identity, "questions": texts, "generation": {**asdict(sllm.generation), **generation},
             "audio": hashlib.sha256(scp.read_bytes()).hexdigest()}
    batch_size = args.batch_size or sllm.generation.batch_size

    def answer(chunk: list[Question]) -> list[str]:
        utts = sorted({q.utt for q in chunk})
        feats = [sllm.features((table.load(u), 16000)) for u in utts]
        return sllm.answer_features(feats, [(utts.index(q.utt), q.text) for q in chunk], batch_size, **generation)

    def record(q: Question, text: str) -> dict:
        return {"utt": q.utt, "question_id": q.question_id, "question": q.text, "answer": text}

    answer_to_file(args.out, stamp, items, answer, record, lambda r: (r["utt"], r["question_id"]), batch_size,
                   "answering")


def main(args: argparse.Namespace) -> None:
    if args.wav and (args.questions or args.out):
        raise MtbiError("--wav answers one --question on stdout; --questions and --out go with --wav_scp")
    if args.wav_scp and not args.out:
        raise MtbiError("--wav_scp needs --out, the jsonl file for the answers")
    if args.stream and not args.wav:
        raise MtbiError("--stream goes with --wav")
    import torch

    from mtbi.cli import torch_device
    from mtbi.pretrained import SpeechLLM

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    sllm = SpeechLLM.from_pretrained(args.model_dir, args.checkpoint, torch_device(args.device), args.revision)
    generation = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    if args.wav_scp:
        ask_many(sllm, args, generation)
    elif args.stream:
        for piece in sllm.stream(args.wav, args.question, **generation):
            print(piece, end="", flush=True)
        print()
    else:
        print(sllm.answer(args.wav, args.question, **generation))
    sys.stdout.flush()


if __name__ == "__main__":
    run_main(build_parser, main)
