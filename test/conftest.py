"""Shared fixtures: small corpora in the real LibriSpeech and Common Voice layouts; an offline hub
cache; the one run of the tiny LibriSpeech recipe (recipe_fixtures.py). And the test tiers: without
--all or -m, the tests marked slow or recipe (setup.cfg) are deselected."""

from __future__ import annotations

import csv
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
from recipe_fixtures import REPO_ROOT, TinyRecipe, make_tiny_recipe

__all__ = ["REPO_ROOT"]  # test modules import it from here
TIERS = ("slow", "recipe")  # the markers of the tiers that a run without --all or -m leaves out
DESELECTED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true", help="run every tier: the default one, slow and recipe")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of the slow and recipe tiers, unless --all or -m says which to run."""
    unmarked = [item.nodeid for item in items
                if "tiny_recipe" in item.fixturenames and not item.get_closest_marker("recipe")]
    if unmarked:
        raise pytest.UsageError(f"tests on the shared tiny recipe run must be marked recipe: {unmarked}")
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    kept = [item for item in items if not any(item.get_closest_marker(tier) for tier in TIERS)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        config.stash[DESELECTED] = len(items) - len(kept)
        items[:] = kept


@pytest.hookimpl(trylast=True)  # after the durations, just above the counts
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if DESELECTED in config.stash:
        count = config.stash[DESELECTED]
        terminalreporter.write_line(f"{count} test{'s' * (count > 1)} of the slow and recipe tiers deselected; "
                                    "run them with --all (every tier), -m slow or -m recipe")


def tone(seconds: float, sample_rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine tone with a little noise, shape (samples,) or (samples, channels)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    wave = wave.astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


@pytest.fixture
def librispeech_root(tmp_path: Path) -> Path:
    """``LibriSpeech/dev-clean`` with 2 readers x 1 chapter x 2 utterances (16 kHz flac)."""
    root = tmp_path / "LibriSpeech"
    for reader, chapter in (("84", "121123"), ("174", "50561")):
        chapter_dir = root / "dev-clean" / reader / chapter
        chapter_dir.mkdir(parents=True)
        lines = []
        for n in range(2):
            utt = f"{reader}-{chapter}-{n:04d}"
            sf.write(chapter_dir / f"{utt}.flac", tone(1.0 + n, 16000, 300 + 100 * n), 16000)
            lines.append(f"{utt} HELLO WORLD NUMBER {n}\n")
        (chapter_dir / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))
    return root


CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
             "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]


def write_cv_tsv(path: Path, rows: list[dict[str, str]], header: list[str] = CV_HEADER) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(c, "") for c in header])


@pytest.fixture
def commonvoice_root(tmp_path: Path) -> Path:
    """A Common Voice language dir: 6 validated 48 kHz mp3 clips, 1 in dev, 1 in test."""
    root = tmp_path / "cv" / "en"
    (root / "clips").mkdir(parents=True)
    rows = []
    for n in range(6):
        clip = f"common_voice_en_{n}.mp3"
        sf.write(root / "clips" / clip, tone(1.5, 48000, 200 + 50 * n), 48000)
        rows.append({"client_id": f"spk{n % 2}", "path": clip, "sentence": f"Sentence number {n}.",
                     "locale": "en"})
    write_cv_tsv(root / "validated.tsv", rows)
    write_cv_tsv(root / "dev.tsv", rows[4:5])
    write_cv_tsv(root / "test.tsv", rows[5:6])
    return root


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache, offline (as HF_HUB_CACHE and HF_HUB_OFFLINE=1 would make it)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory: pytest.TempPathFactory) -> TinyRecipe:
    """Stages 1-8 of the tiny LibriSpeech recipe, run once for the session (recipe_fixtures.TinyRecipe)."""
    return make_tiny_recipe(tmp_path_factory.mktemp("tiny_recipe"))
