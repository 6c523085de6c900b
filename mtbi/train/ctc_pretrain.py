"""CTC pre-training of a Conformer encoder (stage 4 for kind conformer, :mod:`mtbi.prepare.encoder`).

:class:`CtcModel` (the Conformer + a character CTC head) is trained on the features and
transcripts of a stage-2 set (AdamW, linear warmup then cosine decay, batches bucketed by length,
SpecAugment-style time and frequency masks) and scored by greedy-CTC WER.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import jiwer
import torch
from tqdm import tqdm

from mtbi.data.audio import FRAME_SHIFT
from mtbi.data.datadir import read_table
from mtbi.data.speech_features import SpeechFeatures
from mtbi.errors import MtbiError
from mtbi.models.ctc import CtcModel, build_vocabulary
from mtbi.models.encoders import ConformerConfig, ConformerSpeechEncoder, EncoderConfig
from mtbi.train.sampler import BucketBatchSampler
from mtbi.train.schedule import warmup_cosine

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class CtcTrainConfig:
    """CTC pre-training of a Conformer encoder (``ctc_train:`` in an encoder config)."""

    steps: int = 600
    batch_size: int = 16           # utterances per batch, bucketed by length
    learning_rate: float = 2e-3    # peak, after warmup_steps of linear warmup; cosine decay to 0
    warmup_steps: int = 60
    weight_decay: float = 0.01
    freq_warp: float = 0.15        # mel axis stretched by a random factor in [1 - freq_warp, 1 + freq_warp]
    freq_masks: int = 2            # SpecAugment: frequency masks per utterance
    freq_mask_bins: int = 10       # ... each up to this many mel bins wide
    time_masks: int = 2            # time masks per utterance
    time_mask_frames: int = 20     # ... each up to this many frames (and 10% of the utterance)
    max_frames: int = 3000         # longer training utterances (10 ms frames) are left out
    eval_batch_size: int = 32
    seed: int = 0
    num_threads: int = 1           # torch CPU threads; 0: torch's default (one per core)


@dataclass(frozen=True)
class FeatureSet:
    """The utterances of a stage-2 dir that have a transcript, sorted by id."""

    name: str
    utts: list[str]
    features: SpeechFeatures
    num_frames: list[int]
    texts: list[str]


def read_feature_set(feats_dir: str | Path) -> FeatureSet:
    """The features (either ``feats_type``) and ``text`` of the stage-2 dir ``feats_dir``."""
    feats_dir = Path(feats_dir)
    features = SpeechFeatures(feats_dir)
    if not (feats_dir / "text").is_file():
        raise MtbiError(f"{feats_dir / 'text'} is missing; it is made by stage 2 (features)")
    texts = read_table(feats_dir / "text", allow_empty_value=True)
    utts = sorted(set(features.utts) & set(texts))
    if not utts:
        raise MtbiError(f"{feats_dir}: no utterance has both features and a transcript; re-run stage 2")
    return FeatureSet(feats_dir.name, utts, features, [features.num_frames[u] for u in utts],
                      [texts[u] for u in utts])


def warp_mel(feats: torch.Tensor, factor: float) -> torch.Tensor:
    """``feats`` ``(T, n_mels)`` with the mel axis stretched by ``factor``: bin ``k`` takes the
    value at bin ``k / factor`` (linear interpolation; the top bin repeats), roughly the
    formant shift of another vocal-tract length."""
    bins = feats.shape[1]
    source = (torch.arange(bins, dtype=torch.float32) / factor).clamp(max=bins - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=bins - 1)
    weight = source - low
    return feats[:, low] * (1 - weight) + feats[:, high] * weight


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, seeds: list[int], config: CtcTrainConfig) -> torch.Tensor:
    """Warp the mel axis of each utterance by a random factor, then set random bands of mel
    bins and spans of frames to the utterance's mean value (SpecAugment); utterance ``b``'s
    draws come from ``seeds[b]``. Padding is left as it is."""
    feats = feats.clone()
    for b, (length, seed) in enumerate(zip(lens.tolist(), seeds)):
        rng = random.Random(seed)
        if config.freq_warp:
            feats[b, :length] = warp_mel(feats[b, :length], rng.uniform(1 - config.freq_warp, 1 + config.freq_warp))
        utterance = feats[b, :length]
        mean = utterance.mean()
        bins = utterance.shape[1]
        for _ in range(config.freq_masks):
            width = rng.randint(0, min(config.freq_mask_bins, bins))
            start = rng.randint(0, bins - width)
            utterance[:, start:start + width] = mean
        longest = min(config.time_mask_frames, length // 10)
        for _ in range(config.time_masks):
            width = rng.randint(0, longest)
            start = rng.randint(0, length - width)
            utterance[start:start + width] = mean
    return feats


def train_ctc(encoder: EncoderConfig, cfg: CtcTrainConfig, train: FeatureSet) -> tuple[CtcModel, dict]:
    """CTC-train a new Conformer of ``encoder`` on ``train``; return the model and its training report."""
    start = time.time()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    vocabulary = build_vocabulary(train.texts)
    if len(vocabulary) < 3:
        raise MtbiError(f"{train.name}: the transcripts have no letters to train a CTC encoder on")
    model = CtcModel(ConformerSpeechEncoder(encoder), vocabulary)
    targets = [model.text_to_ids(text) for text in train.texts]
    out_frames = model.encoder.output_lengths(torch.tensor(train.num_frames)).tolist()
    # CTC needs at least one output frame per token (more for repeated letters); such
    # utterances, empty transcripts and overlong ones are left out.
    kept = [i for i, (t, n, f) in enumerate(zip(targets, train.num_frames, out_frames))
            if t and n <= cfg.max_frames and f >= len(t)]
    if len(kept) < cfg.batch_size:
        raise MtbiError(f"{train.name}: only {len(kept)} usable training utterances, fewer than one batch "
                        f"({cfg.batch_size}); lower ctc_train.batch_size or check the data")
    parameters = sum(p.numel() for p in model.parameters())
    logger.info("CTC Conformer: %.2fM parameters, vocabulary of %d, %d of %d training utterances (%.2f h)",
                parameters / 1e6, len(vocabulary), len(kept), len(train.utts),
                sum(train.num_frames[i] for i in kept) * FRAME_SHIFT / 3600)

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, cfg.warmup_steps,
                                                                                       cfg.steps))
    sampler = BucketBatchSampler([train.num_frames[i] for i in kept], cfg.batch_size, seed=cfg.seed)
    model.train()
    average = None
    batches = [batch for _, batch in zip(range(cfg.steps), sampler)]
    # Features are read (for a raw dir, computed) by a worker while the model trains.
    loaded = train.features.batches([[train.utts[kept[i]] for i, _, _ in batch] for batch in batches])
    progress = tqdm(zip(batches, loaded), total=cfg.steps, desc="CTC pre-training", unit="step", mininterval=5.0)
    for step, (batch, (_, feats, lens)) in enumerate(progress):
        indices = [kept[i] for i, _, _ in batch]
        feats = spec_augment(feats, lens, [seed for _, seed, _ in batch], cfg)
        loss = model.loss(feats, lens, [targets[i] for i in indices])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        average = loss.item() if average is None else 0.95 * average + 0.05 * loss.item()
        progress.set_postfix(loss=f"{average:.2f}", refresh=False)
        if (step + 1) % max(1, cfg.steps // 10) == 0:
            logger.info("step %d/%d: CTC loss %.3f (running mean), %.0f s", step + 1, cfg.steps, average,
                        time.time() - start)
    model.eval()
    report = {"parameters": parameters, "steps": cfg.steps, "train_seconds": round(time.time() - start, 1),
              "threads": torch.get_num_threads(), "final_loss": round(average, 3),
              "train_utterances": len(kept)}
    return model, report


def evaluate_wer(model: CtcModel, features: FeatureSet, batch_size: int) -> dict:
    """Greedy-CTC word and character error rates of ``model`` on ``features``."""
    refs = [model.normalize_text(text) for text in features.texts]
    scored = sorted((i for i, ref in enumerate(refs) if ref), key=lambda i: features.num_frames[i])
    if not scored:
        raise MtbiError(f"{features.name}: no transcript has a character of the CTC vocabulary to score")
    hyps: dict[int, str] = {}
    batches = [scored[b:b + batch_size] for b in range(0, len(scored), batch_size)]
    loaded = features.features.batches([[features.utts[i] for i in indices] for indices in batches])
    for indices, (_, feats, lens) in tqdm(zip(batches, loaded), total=len(batches), desc=f"decoding {features.name}",
                                          unit="batch", mininterval=5.0):
        hyps.update(zip(indices, model.greedy_decode(feats, lens)))
    ref_list, hyp_list = [refs[i] for i in scored], [hyps[i] for i in scored]
    return {"utterances": len(scored), "wer": jiwer.wer(ref_list, hyp_list), "cer": jiwer.cer(ref_list, hyp_list),
            "example": (refs[min(scored)], hyps[min(scored)])}


def report_markdown(report: dict, scores: dict[str, dict], c: ConformerConfig) -> str:
    """The CTC encoder's training summary and WER table."""
    lines = [f"CTC-pretrained Conformer ({c.num_blocks} blocks x {c.output_size}, {c.input_layer}): "
             f"{report['parameters'] / 1e6:.2f}M parameters, {report['steps']} steps on "
             f"{report['train_utterances']} utterances in {report['train_seconds']:.0f} s "
             f"({report['threads']} CPU threads), final CTC loss {report['final_loss']:.3f}.", "",
             "| set | utterances | WER (greedy CTC) | CER |", "|---|---|---|---|"]
    for name, s in scores.items():
        lines.append(f"| {name} | {s['utterances']} | {100 * s['wer']:.2f}% | {100 * s['cer']:.2f}% |")
    return "\n".join(lines) + "\n"
