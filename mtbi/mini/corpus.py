"""The synthetic mini corpus: espeak-ng speech in the real LibriSpeech or Common Voice layout.

Sentences come from a small grammar (``lexicon.yaml``); every utterance is spoken by
one of several espeak-ng voices at its own speed and pitch, with word start/end times from
the synthesizer written as CTM (``<recording> 1 <start> <duration> <word>``, recording = audio
file stem, words = the transcript's whitespace tokens). Output is deterministic for a seed.

LibriSpeech layout (returns ``<out>/LibriSpeech``, the value ``LIBRISPEECH`` would hold)::

    LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac
    LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt     (upper case, as the real one)
    LibriSpeech/alignments/<part>.ctm

Common Voice layout (returns ``<out>/cv-corpus-mini/en``, the value ``COMMONVOICE`` would hold)::

    en/{validated,train,dev,test}.tsv   (the real header; sentences capitalised with a full stop)
    en/clips/common_voice_en_<n>.mp3    (48 kHz, as the real clips)
    en/alignments/{train,dev,test}.ctm
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import soundfile as sf
import soxr
import yaml
from tqdm import tqdm

from mtbi.errors import MtbiError
from mtbi.mini.tts import Synthesizer, Voice
from mtbi.stage import Step, atomic_dir, marker

logger = logging.getLogger(__name__)

LEXICON_PATH = Path(__file__).with_name("lexicon.yaml")
SPLITS = ("train", "dev", "test")
LIBRISPEECH_PARTS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
CV_COLUMNS = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
              "down_votes", "age", "gender", "accents", "variant", "locale", "segment")
CV_SAMPLE_RATE = 48000
LIBRISPEECH_SAMPLE_RATE = 16000
UTTS_PER_CHAPTER = 100


@dataclass(frozen=True)
class MiniSpeaker:
    """A synthetic speaker: a LibriSpeech-style numeric id and an espeak-ng voice."""

    speaker_id: str
    voice: Voice


# Speakers are disjoint across splits, as in LibriSpeech; dev/test reuse the base voices
# at other speeds and pitches so that a tiny model trained in minutes can still generalise.
SPEAKERS: dict[str, list[MiniSpeaker]] = {
    "train": [
        MiniSpeaker("1001", Voice("en-us", 175, 50)),
        MiniSpeaker("1002", Voice("en-us+f3", 160, 62)),
        MiniSpeaker("1003", Voice("en-gb-x-rp", 170, 45)),
        MiniSpeaker("1004", Voice("en-gb-x-rp+f3", 185, 58)),
        MiniSpeaker("1005", Voice("en-gb-scotland", 180, 50)),
        MiniSpeaker("1006", Voice("en-029", 165, 55)),
        MiniSpeaker("1007", Voice("en-us+m7", 190, 40)),
        MiniSpeaker("1008", Voice("en-gb-scotland+f3", 150, 60)),
    ],
    "dev": [
        MiniSpeaker("2001", Voice("en-us+f3", 180, 55)),
        MiniSpeaker("2002", Voice("en-gb-x-rp+m7", 165, 42)),
    ],
    "test": [
        MiniSpeaker("3001", Voice("en-us", 155, 60)),
        MiniSpeaker("3002", Voice("en-029+f3", 175, 52)),
    ],
}


def load_lexicon(path: Path = LEXICON_PATH) -> dict:
    """The mini grammar's word classes (see ``lexicon.yaml``)."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def generate_sentences(count: int, rng: random.Random, exclude: set[str], lexicon: dict) -> list[str]:
    """``count`` distinct lower-case sentences from the grammar, none of them in ``exclude``."""
    adjectives = lexicon["adjectives"]["positive"] + lexicon["adjectives"]["negative"]
    objects = [w for words in lexicon["objects"].values() for w in words]
    sentences: list[str] = []
    seen = set(exclude)
    while len(sentences) < count:
        words = ["the", rng.choice(adjectives), rng.choice(lexicon["subjects"]),
                 rng.choice(list(lexicon["verbs"])), rng.choice(lexicon["numbers"]),
                 rng.choice(lexicon["colors"]), rng.choice(objects),
                 "in", "the", rng.choice(lexicon["places"])]
        if rng.random() < 0.5:
            words.append(rng.choice(lexicon["times"]))
        sentence = " ".join(words)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


@dataclass(frozen=True)
class _Job:
    audio_path: str
    recording: str
    spoken: str          # lower-case words given to the synthesizer
    tokens: tuple[str, ...]  # the transcript's tokens, one per spoken word
    voice: Voice
    sample_rate: int


_synthesizer: Synthesizer | None = None


def _synthesize_job(job: _Job) -> list[str]:
    """Synthesize and write one utterance; return its CTM lines."""
    global _synthesizer
    if _synthesizer is None:
        _synthesizer = Synthesizer()
    result = _synthesizer.synthesize(job.spoken, job.voice)
    samples = soxr.resample(result.samples, result.sample_rate, job.sample_rate, quality="HQ")
    Path(job.audio_path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(job.audio_path, samples, job.sample_rate)
    # Round both ends to the CTM's millisecond precision so that start + duration = end.
    spans = [(round(w.start, 3), round(w.end, 3)) for w in result.words]
    return [f"{job.recording} 1 {start:.3f} {end - start:.3f} {token}"
            for (start, end), token in zip(spans, job.tokens)]


def make_mini_corpus(out_dir: str | Path, layout: str, sizes: dict[str, int], seed: int = 0,
                     nj: int = 1) -> Path:
    """Build the mini corpus under ``out_dir`` (skipped when already built with the same
    parameters) and return the corpus root to put in db.sh."""
    if layout not in ("librispeech", "commonvoice"):
        raise MtbiError(f"unknown mini corpus layout '{layout}'; use librispeech or commonvoice")
    out_dir = Path(out_dir)
    # Only this top directory is built and replaced: anything else in out_dir is left alone.
    top = out_dir / ("LibriSpeech" if layout == "librispeech" else "cv-corpus-mini")
    root = top if layout == "librispeech" else top / "en"
    params = {"layout": layout, "sizes": sizes, "seed": seed,
              "speakers": {s: [asdict(m) for m in SPEAKERS[s]] for s in SPLITS}}
    step = Step(marker(top), params)
    if step.skip(f"mini corpus already built in {top}"):
        return root
    if top.exists() and not step.path.is_file():
        raise MtbiError(f"{top} exists and is not a mini corpus (or one built before mtbi's stage markers: "
                        "remove it); choose another --mini_dir")

    rng = random.Random(seed)
    lexicon = load_lexicon()
    used: set[str] = set()
    plan: dict[str, list[tuple[MiniSpeaker, str]]] = {}
    for split in SPLITS:
        sentences = generate_sentences(sizes[split], rng, used, lexicon)
        used.update(sentences)
        speakers = SPEAKERS[split]
        plan[split] = [(speakers[i % len(speakers)], s) for i, s in enumerate(sentences)]

    with atomic_dir(top) as tmp:
        tmp_root = tmp / root.relative_to(top)
        writer = _LibriSpeechWriter(tmp_root) if layout == "librispeech" else _CommonVoiceWriter(tmp_root)
        for split in SPLITS:
            jobs = writer.plan(split, plan[split])
            ctm = _run_jobs(jobs, nj, desc=f"synthesizing {split}")
            writer.finish(split, ctm)
        step.mark_done(inside=tmp)
    logger.info("mini corpus (%s layout) written to %s: %s utterances", layout, root,
                ", ".join(f"{sizes[s]} {s}" for s in SPLITS))
    return root


def _run_jobs(jobs: Sequence[_Job], nj: int, desc: str) -> list[str]:
    """Run synthesis jobs over ``nj`` processes, returning CTM lines in job order."""
    progress = dict(total=len(jobs), desc=desc, unit="utt", mininterval=2.0)
    if nj <= 1:
        return [line for job in tqdm(jobs, **progress) for line in _synthesize_job(job)]
    with multiprocessing.get_context("spawn").Pool(nj) as pool:
        results = list(tqdm(pool.imap(_synthesize_job, jobs, chunksize=16), **progress))
    return [line for lines in results for line in lines]


class _LibriSpeechWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._transcripts: dict[Path, list[str]] = {}

    def plan(self, split: str, utterances: list[tuple[MiniSpeaker, str]]) -> list[_Job]:
        part_dir = self.root / LIBRISPEECH_PARTS[split]
        counts: dict[str, int] = {}
        jobs = []
        for speaker, sentence in utterances:
            n = counts.get(speaker.speaker_id, 0)
            counts[speaker.speaker_id] = n + 1
            chapter = str(100 + n // UTTS_PER_CHAPTER)
            utt_id = f"{speaker.speaker_id}-{chapter}-{n % UTTS_PER_CHAPTER:04d}"
            chapter_dir = part_dir / speaker.speaker_id / chapter
            trans = chapter_dir / f"{speaker.speaker_id}-{chapter}.trans.txt"
            self._transcripts.setdefault(trans, []).append(f"{utt_id} {sentence.upper()}")
            jobs.append(_Job(str(chapter_dir / f"{utt_id}.flac"), utt_id, sentence,
                             tuple(sentence.upper().split()), speaker.voice, LIBRISPEECH_SAMPLE_RATE))
        return jobs

    def finish(self, split: str, ctm: list[str]) -> None:
        for trans, lines in self._transcripts.items():
            trans.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        self._transcripts.clear()
        _write_ctm(self.root / "alignments" / f"{LIBRISPEECH_PARTS[split]}.ctm", ctm)


class _CommonVoiceWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._rows: dict[str, list[dict[str, str]]] = {}
        self._next_clip = 1

    def plan(self, split: str, utterances: list[tuple[MiniSpeaker, str]]) -> list[_Job]:
        jobs, rows = [], []
        for speaker, sentence in utterances:
            clip = f"common_voice_en_{self._next_clip}.mp3"
            self._next_clip += 1
            written = sentence[0].upper() + sentence[1:] + "."
            client_id = hashlib.sha512(f"mini-speaker-{speaker.speaker_id}".encode()).hexdigest()
            rows.append({"client_id": client_id, "path": clip,
                         "sentence_id": hashlib.sha256(written.encode()).hexdigest(),
                         "sentence": written, "up_votes": "2", "down_votes": "0", "locale": "en"})
            jobs.append(_Job(str(self.root / "clips" / clip), Path(clip).stem, sentence,
                             tuple(written.split()), speaker.voice, CV_SAMPLE_RATE))
        self._rows[split] = rows
        return jobs

    def finish(self, split: str, ctm: list[str]) -> None:
        _write_ctm(self.root / "alignments" / f"{split}.ctm", ctm)
        _write_tsv(self.root / f"{split}.tsv", self._rows[split])
        if split == SPLITS[-1]:
            _write_tsv(self.root / "validated.tsv", [r for s in SPLITS for r in self._rows[s]])


def _write_ctm(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _write_tsv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(CV_COLUMNS) + "\n")
        for row in rows:
            f.write("\t".join(row.get(c, "") for c in CV_COLUMNS) + "\n")
