#!/usr/bin/env python3
"""Benchmark: the data stages at corpus scale, and the disk of each --feats_type.

    tools/venv/bin/python tools/bench/scale.py [--utts 25000 100000] [--nj 2] [--subset 1000]
        [--work_dir /tmp/mtbi_scale]

For each size in --utts, builds a LibriSpeech-layout corpus (train-clean-100/<reader>/<chapter>/
*.flac and *.trans.txt; 100 utterances a chapter, 2 chapters a reader) whose flac files are hard
links to 8 real espeak-ng utterances (1.6 to 3.4 s), with distinct transcripts (the CTC subset
below gets the true ones). Then times, each
stage in processes of its own as mtbi.sh runs them, with the peak resident memory of the largest
process:

1. stage 1: ``mtbi.bin.prepare_data`` (reads the layout, checks every audio header);
2. stage 2 raw: ``mtbi.bin.extract_feats --feats_type raw`` in --nj shards at once + ``merge_feats``;
3. stage 5's planning: the questions of every utterance (every train task, one seen prompt each:
   ``plan_requests``), split into --nj shards, with the digest each shard's stamp records;

and, on the first --subset utterances only (their cost is linear in the utterances), stage 2
logmel (the baseline of the disk per hour) and stage 3's CTC alignment (``mtbi.bin.align_words
--method ctc`` in --nj shards + the merge, with a random Conformer of conf/encoder_tiny.yaml,
features computed from the raw audio). Memory is linear when peak memory grows no faster than the utterance count between the
sizes; the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mtbi.bench.stamp import table_stamp

REPO = Path(__file__).resolve().parents[2]
RECIPE_CONF = REPO / "egs" / "librispeech_mtbi" / "conf"
WORDS = "zero one two three four five six seven eight nine".split()


# Runs a module (-m) or code (-c) and writes the process's peak resident memory (VmHWM, kB) to a
# file at exit. VmHWM belongs to the program after exec; the kernel's ru_maxrss would also count
# the memory of the benchmark process that started it.
PEAK_MEMORY = """
import atexit, runpy, sys
out, kind, target = sys.argv[1:4]
del sys.argv[1:4]
def report():
    with open("/proc/self/status") as f:
        open(out, "w").write(next(line for line in f if line.startswith("VmHWM")).split()[1])
atexit.register(report)
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<code>", "exec"), {"__name__": "__main__"})
"""


def run_stage(commands: list[list[str]], cwd: Path) -> dict:
    """Run ``commands`` (``[python, "-m" or "-c", module or code, args...]``) at once, each in a
    process of its own (output in ``cwd/logs``); wall seconds, the largest peak resident memory (MB)
    and the first command's standard output."""
    logs = cwd / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    procs, files = [], []
    for n, (python, kind, target, *args) in enumerate(commands):
        stem = logs / f"{time.time_ns()}.{n}"
        files.append({k: stem.with_suffix(f".{k}") for k in ("out", "err", "peak")})
        with open(files[-1]["out"], "wb") as out, open(files[-1]["err"], "wb") as err:
            procs.append(subprocess.Popen([python, "-c", PEAK_MEMORY, str(files[-1]["peak"]), kind, target, *args],
                                          cwd=cwd, stdout=out, stderr=err))
    for proc, names in zip(procs, files):
        if proc.wait():
            sys.exit(f"{' '.join(proc.args[3:])} failed:\n{names['err'].read_text()[-3000:]}")
    peak = max(int(names["peak"].read_text()) for names in files) / 1024
    return {"seconds": round(time.perf_counter() - start, 2), "peak_mb": round(peak, 1),
            "stdout": files[0]["out"].read_text().strip()}


SENTENCES = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
             "a stitch in time saves nine", "all that glitters is not gold",
             "the early bird catches the worm and flies away over the hills",
             "birds of a feather flock together", "actions speak louder than words", "practice makes perfect"]


def make_sources(out_dir: Path) -> list[Path]:
    """The 8 :data:`SENTENCES` spoken by espeak-ng, as 16 kHz flac files."""
    import soundfile as sf
    import soxr

    from mtbi.mini.tts import Synthesizer, Voice

    out_dir.mkdir(parents=True, exist_ok=True)
    synthesizer = Synthesizer()
    files = []
    for n, text in enumerate(SENTENCES):
        result = synthesizer.synthesize(text, Voice("en-us", 150 + 10 * n, 50))
        path = out_dir / f"source{n}.flac"
        sf.write(path, soxr.resample(result.samples, result.sample_rate, 16000), 16000)
        files.append(path)
    return files


def source_of(utt: str) -> int:
    """Which of the 8 sources the corpus links ``utt`` (``<reader>-<chapter>-<k>``) to."""
    _, chapter, k = utt.split("-")
    return (int(chapter) - 50000 + int(k)) % len(SENTENCES)


def make_corpus(root: Path, num_utts: int, sources: list[Path]) -> None:
    """A LibriSpeech-layout part of ``num_utts`` hard-linked flac files with distinct transcripts."""
    part = root / "train-clean-100"
    for chapter_no in range((num_utts + 99) // 100):
        reader, chapter = 1000 + chapter_no // 2, 50000 + chapter_no
        chapter_dir = part / str(reader) / str(chapter)
        chapter_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for k in range(min(100, num_utts - 100 * chapter_no)):
            utt = f"{reader}-{chapter}-{k:04d}"
            os.link(sources[source_of(utt)], chapter_dir / f"{utt}.flac")
            number = " ".join(WORDS[int(d)] for d in str(100 * chapter_no + k))
            lines.append(f"{utt} THE UTTERANCE NUMBER {number.upper()} OF THIS CORPUS\n")
        (chapter_dir / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))


PLAN = """
import sys, time
from pathlib import Path
from mtbi.data.datadir import read_table
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.targets import _plan_digest, plan_requests, shard_requests
bank = load_task_bank(sys.argv[2])
texts = read_table(Path(sys.argv[1]) / "text", allow_empty_value=True)
requests = plan_requests(texts, bank, bank.train_tasks)
nj = int(sys.argv[3])
for shard in range(1, nj + 1):
    _plan_digest(shard_requests(requests, shard, nj))
print(len(requests))
"""


def make_ctc_model(out_dir: Path, texts: list[str]) -> None:
    """A random CTC model with the Conformer of conf/encoder_tiny.yaml."""
    import torch

    from mtbi.config import load_config
    from mtbi.models.ctc import CtcModel, build_vocabulary
    from mtbi.models.encoders import build_encoder
    from mtbi.prepare.encoder import EncoderPrepConfig

    torch.manual_seed(0)
    config = load_config(RECIPE_CONF / "encoder_tiny.yaml", EncoderPrepConfig).encoder_config()
    CtcModel(build_encoder(config), build_vocabulary(texts)).save_pretrained(out_dir)


def dir_bytes(path: Path, skip: tuple[str, ...] = ("log",)) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not set(f.relative_to(path).parts) & set(skip))


def stage2(data: Path, out: Path, feats_type: str, nj: int, cwd: Path) -> dict:
    python = sys.executable
    jobs = [[python, "-m", "mtbi.bin.extract_feats", "--data_dir", str(data), "--out_dir", str(out),
             "--feats_type", feats_type, "--shard", str(j), "--num_shards", str(nj)] for j in range(1, nj + 1)]
    extract = run_stage(jobs, cwd)
    merge = run_stage([[python, "-m", "mtbi.bin.merge_feats", "--data_dir", str(data), "--out_dir", str(out),
                        "--num_shards", str(nj)]], cwd)
    return {"seconds": round(extract["seconds"] + merge["seconds"], 2),
            "peak_mb": max(extract["peak_mb"], merge["peak_mb"]), "merge_seconds": merge["seconds"]}


def hours(stage2_dir: Path) -> float:
    from mtbi.data.datadir import read_table

    return sum(int(n) for n in read_table(stage2_dir / "utt2num_frames").values()) / 100 / 3600


def measure(num_utts: int, work: Path, sources: list[Path], nj: int, subset: int) -> dict:
    from mtbi.data.datadir import read_table, subset_data_dir, write_table

    python = sys.executable
    root = work / f"n{num_utts}"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    make_corpus(root / "LibriSpeech", num_utts, sources)
    print(f"{num_utts} utterances: corpus built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    data = root / "data" / "train"
    result = {"utts": num_utts}
    result["stage1"] = run_stage([[python, "-m", "mtbi.bin.prepare_data", "--corpus", "librispeech", "--root",
                                   str(root / "LibriSpeech"), "--parts", "train-clean-100", "--out_dir",
                                   str(data)]], root)
    result["stage2_raw"] = stage2(data, root / "dump" / "raw" / "train", "raw", nj, root)
    result["hours"] = round(hours(root / "dump" / "raw" / "train"), 2)
    result["raw_mb_per_hour"] = round(dir_bytes(root / "dump" / "raw" / "train") / 1e6 / result["hours"], 3)
    result["stage5_plan"] = run_stage([[python, "-c", PLAN, str(data), str(RECIPE_CONF / "tasks.yaml"), str(nj)]],
                                      root)
    result["stage5_plan"]["requests"] = int(result["stage5_plan"]["stdout"])

    # The per-utterance stages, on a subset.
    sub = root / "data" / "sub"
    keep = set(sorted(read_table(data / "text"))[:subset])
    subset_data_dir(data, sub, keep)
    # CTC alignment aligns what was said: the subset gets its utterances' true transcripts.
    write_table(sub / "text", {utt: SENTENCES[source_of(utt)].upper() for utt in keep})
    result["subset"] = len(keep)
    result["stage2_raw_subset"] = stage2(sub, root / "dump" / "raw" / "sub", "raw", nj, root)
    result["stage2_logmel_subset"] = stage2(sub, root / "dump" / "logmel80" / "sub", "logmel", nj, root)
    sub_hours = hours(root / "dump" / "logmel80" / "sub")
    result["logmel_mb_per_hour"] = round(dir_bytes(root / "dump" / "logmel80" / "sub") / 1e6 / sub_hours, 1)
    result["flac_mb_per_hour"] = round(sum(s.stat().st_size for s in sources) / 1e6
                                       / (sum(_seconds(s) for s in sources) / 3600), 1)
    make_ctc_model(root / "ctc_model", list(read_table(sub / "text").values()))
    align_args = ["--data_dir", str(sub), "--feats_dir", str(root / "dump" / "raw" / "sub"), "--method", "ctc",
                  "--ctc_model", str(root / "ctc_model")]
    threads = str(max(1, (os.cpu_count() or 1) // nj))  # as mtbi.sh gives each shard
    align = run_stage([[python, "-m", "mtbi.bin.align_words", *align_args, "--shard", str(j), "--num_shards", str(nj),
                        "--num_threads", threads] for j in range(1, nj + 1)], root)
    merge = run_stage([[python, "-m", "mtbi.bin.align_words", *align_args, "--merge", "--num_shards", str(nj)]], root)
    align = {"seconds": round(align["seconds"] + merge["seconds"], 2), "peak_mb": max(align["peak_mb"], merge["peak_mb"]),
             "aligned": len({line.split()[0] for line in (sub / "word_align").read_text().splitlines()})}
    align["utts_per_s"] = round(len(keep) / align["seconds"], 1)
    result["stage3_ctc_subset"] = align
    shutil.rmtree(root / "LibriSpeech")
    shutil.rmtree(root / "dump" / "logmel80")
    return result


def _seconds(path: Path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, nargs="+", default=[25000, 100000])
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--subset", type=int, default=1000)
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/mtbi_scale"))
    args = parser.parse_args()
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    sources = make_sources(args.work_dir / "sources")
    results = [measure(n, args.work_dir, sources, args.nj, args.subset) for n in sorted(args.utts)]
    print(json.dumps(results, indent=1))
    big = results[-1]
    per_100k = 100000 / big["utts"]
    print(f"\nper 100k utterances ({big['hours'] * per_100k:.0f} h of audio here), --nj {args.nj}:")
    for key, label in (("stage1", "stage 1 (prepare_data)"), ("stage2_raw", "stage 2 raw"),
                       ("stage5_plan", "stage 5 planning")):
        print(f"  {label:24s} {big[key]['seconds'] * per_100k:8.1f} s   peak {big[key]['peak_mb']:8.1f} MB")
    ctc = big["stage3_ctc_subset"]
    print(f"  {'stage 3 ctc':24s} {100000 / ctc['utts_per_s']:8.1f} s   peak {ctc['peak_mb']:8.1f} MB "
          f"({ctc['utts_per_s']} utt/s on {big['subset']} utterances, {ctc['aligned']} aligned)")
    raw, logmel = big["stage2_raw_subset"], big["stage2_logmel_subset"]
    print(f"  stage 2 logmel vs raw on {big['subset']} utterances: {logmel['seconds']:.1f} s vs {raw['seconds']:.1f} s "
          f"({logmel['seconds'] / raw['seconds']:.1f}x the time of raw)")
    print(f"disk per hour of audio: raw {big['raw_mb_per_hour']} MB, logmel80 {big['logmel_mb_per_hour']} MB "
          f"(128 bins: x1.6), the flac audio itself {big['flac_mb_per_hour']} MB")
    if len(results) > 1:
        small, growth = results[0], big["utts"] / results[0]["utts"]
        print(f"\nmemory growth from {small['utts']} to {big['utts']} utterances ({growth:.1f}x):")
        for key in ("stage1", "stage2_raw", "stage5_plan"):
            ratio = big[key]["peak_mb"] / small[key]["peak_mb"]
            print(f"  {key:12s} peak {small[key]['peak_mb']:.0f} -> {big[key]['peak_mb']:.0f} MB ({ratio:.2f}x): "
                  f"{'linear or less' if ratio <= growth * 1.05 else 'FASTER THAN LINEAR'}")


if __name__ == "__main__":
    main()
