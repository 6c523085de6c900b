"""The model card (README.md) of an exported SLLM: method, base models, training data and steps,
its benchmark results with 95% bootstrap intervals over test items, intended use and limits.

Everything in it is read from the trained dir: ``config.yaml`` (training config, models, training
data), the last checkpoint's ``trainer_state.json``, ``env.txt`` (the mtbi commit), and each
``bench_<set>/`` of it (``scores.json``, and ``hyp.jsonl`` with the teacher's text-input answers in
``<exp>/teacher_text/bench_<set>/hyp.jsonl`` for the intervals, computed as the comparison of
systems computes them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtbi.bench.external import external_markdown
from mtbi.bench.intervals import SPLITS, compare_fidelity
from mtbi.bench.report import read_scores
from mtbi.bench.scoring import read_hyps
from mtbi.models.encoders import EncoderConfig
from mtbi.run_names import TEACHER_TEXT
from mtbi.train import sllm_dir

TINY_TEACHER_KIND = "tiny-rule-teacher"  # the mini world's teacher (conf/teacher_tiny.yaml name)
MODEL = "model"  # the exported model's name among the systems whose fidelity is computed


def _reference(ref: dict, local_what: str) -> str:
    return f"`{ref['model']}` at commit `{ref['revision']}`" if ref["revision"] else f"{local_what}, included (`{ref['model']}`)"


def _method(train: dict, tasks: list[str] | None) -> str:
    interleave = train["data"]["interleave"]
    if tasks == ["transcription"]:
        method = "ASR-only supervised fine-tuning: the connector learns to transcribe"
    elif tasks == ["continuation"]:
        method = "BLSP-style behavior imitation: the teacher's continuation of each transcript"
    else:
        listed = ", ".join(tasks) if tasks else "every train task of the task bank"
        method = f"multi-task behavior imitation (MTBI) of the teacher's answers on: {listed}"
    if interleave["prob"] > 0:
        method += (f"; speech-text interleaving on {100 * interleave['prob']:.0f}% of the examples (text for "
                   f"{100 * interleave['min_ratio']:.0f}-{100 * interleave['max_ratio']:.0f}% of the words, spans "
                   f"of {interleave['min_span']}-{interleave['max_span']} words)")
    return method


def _training_lines(model_dir: Path, config: dict, checkpoint: str | None) -> list[str]:
    train, data = config["train"], config.get("training_data")
    optim = train["optim"]
    if checkpoint:
        state = sllm_dir.read_trainer_state(model_dir / sllm_dir.CHECKPOINT_DIR / checkpoint)
        steps, seconds = state["step"], state.get("train_seconds")
    else:
        steps, seconds = sllm_dir.training_summary(model_dir)
    lines = [f"- Method: {_method(train, data['tasks'] if data else train['data']['tasks'])}.",
             f"- Targets: the answers of the teacher `{config['teacher']}` to each task prompt about the transcript "
             f"(response: {train['data']['response']})."]
    if data:
        lines.append(f"- Data: {data['examples']} examples about {data['utterances']} utterances "
                     f"({data['hours']:.2f} h of speech), from `{data['targets']}`.")
    lines.append(f"- Optimization: {steps if steps is not None else optim['max_steps']} steps of "
                 f"{optim['batch_size'] or str(optim['batch_tokens']) + ' tokens'} examples, AdamW at learning rate "
                 f"{optim['learning_rate']}, {train['precision']}, seed {train['seed']}"
                 + (f"; {seconds / 60:.1f} min of training" if seconds else "") + ".")
    return lines


def _split_intervals(hyp: Path, teacher_hyp: Path) -> dict[str, dict[str, str]]:
    """Per split, exact match and chrF to the teacher as ``mean [low, high]`` (%)."""
    runs = {MODEL: [read_hyps(hyp)], TEACHER_TEXT: [read_hyps(teacher_hyp)]}
    cells: dict[str, dict[str, str]] = {}
    for metric in ("exact_match", "chrf"):
        for split, f in compare_fidelity(runs, MODEL, metric).get(MODEL, {}).items():
            iv = f.items
            cells.setdefault(split, {})[metric] = f"{100 * iv.mean:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"
    return cells


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _benchmark_lines(model_dir: Path, checkpoint: str | None) -> list[str]:
    if checkpoint:
        return ["", f"Not benchmarked: this export holds checkpoint {checkpoint}, and the benchmark of the "
                "trained dir is of its final weights."]
    lines = []
    for scores_file in sorted(model_dir.glob("bench_*/scores.json")):
        bench, scores = scores_file.parent, read_scores(scores_file)
        test_set = bench.name[len("bench_"):]
        lines += ["", f"### {test_set}", ""]
        if "external" in scores:
            lines += external_markdown(test_set, scores).splitlines()[2:]
            continue
        teacher_hyp = model_dir.parent / TEACHER_TEXT / bench.name / "hyp.jsonl"
        cells = _split_intervals(bench / "hyp.jsonl", teacher_hyp) if teacher_hyp.is_file() else {}
        groups = {**scores["prompt_generalization"], **scores["task_generalization"]}
        lines += ["Fidelity: agreement with the teacher's answer to the transcript (%, 95% bootstrap "
                  "interval over items); task following: answers that do the task rather than transcribe.", "",
                  "| split | items | fidelity exact match | fidelity chrF | task following | WER |",
                  "|---|---|---|---|---|---|"]
        for split, title in SPLITS.items():
            if split in groups:
                g = groups[split]
                em = cells.get(split, {}).get("exact_match") or _pct(g.get("fidelity", {}).get("exact_match"))
                lines.append(f"| {title} | {g['n']} | {em} | {cells.get(split, {}).get('chrf', '-')} | "
                             f"{_pct(g['task_following'])} | {_pct(g['wer'])} |")
    if not lines:
        return ["", "Not benchmarked: no `bench_<set>/scores.json` in the trained dir (stages 7-8)."]
    return lines + ["", "One training run; the intervals are over test items and leave out the spread over "
                    "training seeds (the recipe's RESULTS.md gives it)."]


def _limits(config: dict) -> list[str]:
    lines = ["- For research on aligning speech with a frozen text LLM. The model answers as its teacher "
             "answers the transcript, with the teacher's knowledge, errors and biases, plus the speech "
             "encoder's recognition errors; it was not tuned or evaluated for safety.",
             f"- It heard only its training corpus (see Training): other languages, accents, noisy or "
             f"far-field audio, and utterances longer than {config['train']['data']['max_frames'] / 100:.0f} s "
             "are untested.",
             "- Questions unlike the task prompts of training are answered as well as the benchmark's "
             "unseen prompts and held-out tasks say, no better."]
    if config["teacher"] == TINY_TEACHER_KIND:
        lines.insert(0, "- **A demo model of mtbi's embedded mini world**: its teacher is a 1.9M-parameter LM "
                        "trained on rule-defined tasks about synthetic espeak-ng sentences. It is a test bench "
                        "of the recipe, not a model for real speech.")
    return lines


def _commit(model_dir: Path) -> str | None:
    env = model_dir / "env.txt"
    if env.is_file():
        for line in env.read_text(encoding="utf-8").splitlines():
            if line.startswith("mtbi_commit:"):
                return line.split(":", 1)[1].strip()
    return None


def model_card(name: str, model_dir: Path, config: dict, encoder: EncoderConfig, weights: Path,
               checkpoint: str | None) -> str:
    """The README.md of the export of ``model_dir`` (``config`` and ``encoder``: the exported configs)."""
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        trainable = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    model = config["train"]["model"]
    lora = model["lora"]
    commit = _commit(model_dir)
    lines = [f"# {name}", "",
             "A speech large language model (SLLM) trained with mtbi (multi-task behavior imitation): a speech "
             "encoder feeds a trainable connector whose outputs the frozen text LLM reads where the "
             "transcript would be, so the model answers questions about speech as the LLM answers them "
             "about the transcript.", "",
             "## Use", "", "```python", "from mtbi import SpeechLLM", "",
             f'model = SpeechLLM.from_pretrained("{name}")',
             'print(model.answer("speech.flac", "Summarize what is said."))', "```", "",
             f"or `python -m mtbi.bin.ask --model_dir {name} --wav speech.flac --question \"Summarize what is said.\"`. "
             "A question with a `{transcript}` slot gets the speech there; otherwise the speech follows the "
             f"question. Answers are greedy, at most {config.get('generation', {}).get('max_new_tokens', 48)} "
             "new tokens, unless told otherwise.", "",
             "## Model", "",
             f"- Speech encoder: {_encoder_line(encoder)} ({'trained with the connector' if model['train_encoder'] else 'frozen'}).",
             f"- Connector: `{model['connector']['kind']}`; {trainable / 1e6:.2f}M trainable parameters in "
             f"`model.safetensors`{' (final weights)' if not checkpoint else f' (checkpoint {checkpoint})'}.",
             f"- LLM: {_reference(config['llm'], 'the teacher trained by the recipe')}, frozen, in "
             f"{config['llm_dtype']}" + (f", with LoRA rank {lora['rank']} on {', '.join(lora['target_modules'])}"
                                         if lora["rank"] else "") + ".",
             "", "## Training", "", *_training_lines(model_dir, config, checkpoint),
             "", "## Benchmark", *_benchmark_lines(model_dir, checkpoint),
             "", "## Intended use and limits", "", *_limits(config), "",
             f"Exported by mtbi {config['export']['mtbi']}" + (f" (trained at commit {commit})." if commit else ".")]
    return "\n".join(lines) + "\n"


def _encoder_line(encoder: EncoderConfig) -> str:
    if encoder.kind == "whisper":
        if encoder.revision:
            return f"the Whisper encoder of `{encoder.model_dir}` at commit `{encoder.revision}`"
        return f"the Whisper encoder of the recipe, included (`encoder/{encoder.model_dir}`)"
    return (f"a Conformer ({encoder.conformer.num_blocks} blocks of {encoder.conformer.output_size}), "
            "CTC-pretrained by the recipe, included")
