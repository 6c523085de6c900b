"""Stage 6: behavior-imitation training of the SpeechLLMModel, on one process or under torchrun (DDP).

Step-based: each optimizer step takes ``accum_grad`` global micro-batches of ``batch_size``
examples, or of up to ``batch_tokens`` padded LLM positions (:mod:`mtbi.train.sampler`), split
over the ranks. Losses are sums over the response tokens divided by the token count of the whole
step on all ranks, so N ranks compute exactly the gradient of one process on the same global
batch, however many examples each rank has. Every ``save_interval`` steps a checkpoint is written
(trainable weights as safetensors; optimizer and scheduler state, and per rank the RNG state and
the sums of the loss-log window under way, loaded back with ``torch.load(weights_only=True)``); a
re-run resumes from the last one and continues the same loss curve, since the data order and the
interleaving draws depend only on the step. SIGTERM or SIGUSR1 stops training after the step under
way, with a checkpoint of that step (``mtbi.train.preemption``).

Writes, under ``out_dir``: ``config.yaml`` (the resolved config), ``checkpoints/step_<N>/``,
``losses.jsonl``, ``tensorboard/``, ``loss_curve.png``, ``model.safetensors`` and ``.done``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mtbi.errors import MtbiError
from mtbi.models.speech_llm import SpeechLLMModel
from mtbi.stage import Step, atomic_dir, atomic_write
from mtbi.train import sllm_dir
from mtbi.train.config import PRECISIONS, TrainConfig
from mtbi.train.dataset import ImitationDataset, collate
from mtbi.train.preemption import StopSignals, TrainingStopped
from mtbi.train.sampler import BucketBatchSampler, TokenBatchSampler, budget_batches, padding_fraction, utterances_per_batch
from mtbi.train.schedule import warmup_cosine

logger = logging.getLogger(__name__)


@dataclass
class LogWindow:
    """The sums behind the next loss line: the window's loss sums (this rank's) and response
    tokens (all ranks'); a checkpoint keeps them, so a resumed run logs the losses of an
    uninterrupted one. Throughput counts this process's part of the window only."""

    ce: float = 0.0
    kl: float = 0.0
    tokens: float = 0.0
    timed_tokens: float = 0.0
    frames: int = 0
    start: float = field(default_factory=time.time)

    def sums(self) -> torch.Tensor:
        """What a checkpoint keeps (float64: exact for these sums)."""
        return torch.tensor([self.ce, self.kl, self.tokens], dtype=torch.float64)

    @classmethod
    def from_sums(cls, sums: torch.Tensor) -> LogWindow:
        ce, kl, tokens = sums.tolist()
        return cls(ce, kl, tokens)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # where collectives run: NCCL reduces GPU tensors only

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks, on the device it came from."""
        if self.world_size == 1:
            return value
        reduced = value.to(self.device)
        dist.all_reduce(reduced)
        return reduced.to(value.device)


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group (gloo on CPU, nccl on GPU) when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, device)


class Trainer:
    """Trains ``model`` on ``train_set`` (validation loss on ``valid_set``) into ``out_dir``;
    ``stage_step`` (the stage's bookkeeping) is marked done at the end."""

    def __init__(self, model: SpeechLLMModel, config: TrainConfig, train_set: ImitationDataset,
                 valid_set: ImitationDataset | None, out_dir: str | Path, device: torch.device,
                 ddp: Distributed = Distributed(), stage_step: Step | None = None) -> None:
        self.stage_step = stage_step
        self.model, self.config, self.out_dir = model.to(device), config, Path(out_dir)
        self.train_set, self.valid_set, self.device, self.ddp = train_set, valid_set, device, ddp
        self.train_lengths = llm_lengths(model, train_set)
        self.valid_lengths = llm_lengths(model, valid_set) if valid_set is not None else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise MtbiError("the model has no trainable weights")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.optim.learning_rate,
                                           weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, config.optim.warmup_steps, config.optim.max_steps))
        self.step = 0
        self.window = LogWindow()
        self.train_seconds = 0.0  # wall time spent training, summed over resumed runs
        self._clock = time.time()  # when train_seconds was last brought up to date
        self.wrapped = model
        if ddp.world_size > 1:
            # Every rank loaded the same frozen models: DDP need not broadcast them from rank 0
            # (a 7B LLM's 15 GB at every start), only the trainable weights.
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, [n for n, p in model.named_parameters() if not p.requires_grad]
                + [n for n, _ in model.named_buffers() if not n.startswith("connector.")])
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        dtype = PRECISIONS[config.precision]
        if dtype == torch.float16 and device.type != "cuda":
            raise MtbiError("precision fp16 needs a GPU (--device cuda); use bf16 or float32 on CPU")
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write ``checkpoints/step_<N>`` (rank 0 the weights and optimizer, every rank its RNG and
        loss-log window)."""
        path = sllm_dir.checkpoint_path(self.out_dir, self.step)
        rng_file = f"rng.{self.ddp.rank}.pt"
        rank_state = {**_rng_state(), "log_window": self.window.sums()}
        if self.ddp.world_size > 1:  # every rank writes its state before rank 0 finishes the dir
            staging = path.with_name(f".rng_{path.name}")
            staging.mkdir(parents=True, exist_ok=True)
            torch.save(rank_state, staging / rng_file)
            dist.barrier()
        if self.ddp.is_main:
            with atomic_dir(path) as tmp:
                save_file({k: v.contiguous().cpu() for k, v in self.model.trainable_state_dict().items()},
                          tmp / sllm_dir.WEIGHTS_FILE)
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                            "scaler": self.scaler.state_dict() if self.scaler else None}, tmp / "optimizer.pt")
                if self.ddp.world_size > 1:
                    for f in staging.iterdir():
                        shutil.move(str(f), tmp / f.name)
                    staging.rmdir()
                else:
                    torch.save(rank_state, tmp / rng_file)
                sllm_dir.write_trainer_state(tmp, {"step": self.step, "world_size": self.ddp.world_size,
                                                   "train_seconds": round(self.train_seconds, 1)})
            for old in sllm_dir.checkpoints(self.out_dir)[:-self.config.keep_checkpoints]:
                shutil.rmtree(old)
        if self.ddp.world_size > 1:
            dist.barrier()

    def resume(self) -> None:
        """Load the last complete checkpoint, if any, and drop the loss lines logged after it (all of
        them without one): the steps after it are trained, and logged, again."""
        found = sllm_dir.checkpoints(self.out_dir)
        state = sllm_dir.read_trainer_state(found[-1]) if found else {"step": 0}
        if self.ddp.is_main:
            _truncate_log(self.out_dir / "losses.jsonl", state["step"])
        if not found:
            return
        path = found[-1]
        self.model.load_trainable_state_dict(
            {k: v.to(self.device) for k, v in load_file(path / sllm_dir.WEIGHTS_FILE).items()}, str(path))
        saved = torch.load(path / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler and saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        rng = path / f"rng.{self.ddp.rank}.pt"
        if state["world_size"] == self.ddp.world_size and rng.is_file():
            rank_state = torch.load(rng, weights_only=True)
            _set_rng_state(rank_state)
            if "log_window" in rank_state:  # checkpoints of earlier versions have none
                self.window = LogWindow.from_sums(rank_state["log_window"])
        else:
            logger.warning("%s was written by %d processes, this run has %d: RNG states and the loss window "
                           "are not restored", path, state["world_size"], self.ddp.world_size)
        self.step = state["step"]
        self.train_seconds = state.get("train_seconds", 0.0)
        logger.info("resumed from %s (step %d)", path, self.step)

    # -- training ----------------------------------------------------------------------------
    def batch_sampler(self, start: int = 0, bucketing: bool | None = None) -> BucketBatchSampler | TokenBatchSampler:
        """The global batches from number ``start`` on: ``optim.batch_size`` examples bucketed by
        speech frames, or up to ``optim.batch_tokens`` padded positions bucketed by LLM length
        (``bucketing``: None for the config's)."""
        optim, ddp = self.config.optim, self.ddp
        bucketing = self.config.bucketing if bucketing is None else bucketing
        if optim.batch_tokens:
            return TokenBatchSampler(self.train_lengths, optim.batch_tokens, self.train_set.utt_index, self.config.seed,
                                     ddp.world_size, ddp.rank, bucketing=bucketing, start=start)
        return BucketBatchSampler(self.train_set.lengths, optim.batch_size, self.config.seed, ddp.world_size,
                                  ddp.rank, bucketing=bucketing, start=start)

    def _loader(self, sampler: BucketBatchSampler | TokenBatchSampler) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=self.config.num_workers,
            collate_fn=functools.partial(collate, with_text_prompts=self.config.kl_weight > 0))

    def report_padding(self, sampler: BucketBatchSampler | TokenBatchSampler) -> dict[str, float]:
        """Padding fractions of one epoch's batches with and without length bucketing, of the speech
        frames (``bucketed``, ``random``) and of the LLM positions (``llm_bucketed``, ``llm_random``),
        and the mean number of distinct utterances in a batch of ``sampler`` (``utts_per_batch``)."""
        bucketing = sampler.bucketing
        batches = {bucketing: sampler.global_batches(0),
                   not bucketing: self.batch_sampler(bucketing=not bucketing).global_batches(0)}
        report = {"bucketed": padding_fraction(self.train_set.lengths, batches[True]),
                  "random": padding_fraction(self.train_set.lengths, batches[False]),
                  "llm_bucketed": padding_fraction(self.train_lengths, batches[True]),
                  "llm_random": padding_fraction(self.train_lengths, batches[False]),
                  "utts_per_batch": utterances_per_batch(self.train_set.utt_index, batches[bucketing])}
        used = batches[bucketing]
        logger.info("padding fraction of the speech frames: %.1f%% bucketed, %.1f%% without bucketing; of the LLM "
                    "positions: %.1f%% bucketed, %.1f%% without; %d batches an epoch of %.1f examples and %.1f "
                    "utterances on average", 100 * report["bucketed"], 100 * report["random"],
                    100 * report["llm_bucketed"], 100 * report["llm_random"], len(used),
                    sum(map(len, used)) / len(used), report["utts_per_batch"])
        return report

    def train(self) -> None:
        """Train to ``optim.max_steps``, resuming from the last checkpoint; on SIGTERM or SIGUSR1 stop
        after the step under way with a checkpoint and raise :class:`TrainingStopped`."""
        with StopSignals() as signals:
            self._train(signals)

    def _train(self, signals: StopSignals) -> None:
        optim = self.config.optim
        self.resume()
        self.sampler = self.batch_sampler(self.step * optim.accum_grad)
        padding = self.report_padding(self.sampler)
        if self.step >= optim.max_steps:
            logger.info("training already reached step %d", self.step)
            self.finish()
            return
        writer = self._summary_writer(padding)
        batches = iter(self._loader(self.sampler))
        progress = tqdm(total=optim.max_steps, initial=self.step, desc="training", unit="step",
                        disable=not self.ddp.is_main, mininterval=5.0)
        self.model.train()
        self.window.start = self._clock = time.time()
        stopped_by = None
        while self.step < optim.max_steps and not stopped_by:
            self._optimizer_step([next(batches) for _ in range(optim.accum_grad)])
            progress.update(1)
            stopped_by = self._after_step(writer, progress, signals)
        progress.close()
        if writer:
            writer.close()
        if stopped_by:
            raise TrainingStopped(stopped_by, self.step, sllm_dir.checkpoint_path(self.out_dir, self.step))
        self.finish()

    def _summary_writer(self, padding: dict[str, float]):
        """Rank 0's TensorBoard writer, from the step resumed at, with the batches' padding; None on other ranks."""
        if not self.ddp.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step + 1)
        writer.add_scalar("data/padding_fraction", padding["bucketed"], self.step)
        writer.add_scalar("data/llm_padding_fraction", padding["llm_bucketed"], self.step)
        writer.add_scalar("data/utts_per_batch", padding["utts_per_batch"], self.step)
        return writer

    def _optimizer_step(self, micro: list) -> None:
        """One optimizer step on this rank's micro-batches ``micro``, its loss sums added to the log window."""
        config, window = self.config, self.window
        tokens = self.ddp.all_sum(torch.tensor(float(sum(b.num_target_tokens for b in micro)))).item()
        scale = self.ddp.world_size / tokens
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1 or self.ddp.world_size == 1
            no_sync = contextlib.nullcontext() if sync else self.wrapped.no_sync()
            with no_sync, self.autocast():
                out = self.wrapped(batch.to(self.device), scale, config.kl_weight, config.ce_weight)
            loss = out["loss"]
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            window.ce += out["ce_sum"].item()
            window.kl += out.get("kl_sum", torch.zeros(())).item()
            window.frames += int(batch.feats_lens.sum())
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, config.optim.grad_clip)
        if not torch.isfinite(grad_norm):
            raise MtbiError(f"the gradient is not finite at step {self.step + 1} (loss diverged); lower "
                            f"optim.learning_rate or use precision bf16; checkpoints are in {self.out_dir / sllm_dir.CHECKPOINT_DIR}")
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        window.tokens += tokens
        window.timed_tokens += tokens

    def _after_step(self, writer, progress: tqdm, signals: StopSignals) -> str | None:
        """The loss line, validation and checkpoint due after a step; then, before the last step,
        the stop signal every rank agrees on (checkpointed at this step), or None."""
        config = self.config
        last = self.step == config.optim.max_steps
        if self.step % config.log_interval == 0 or last:
            self._log(self.window, writer, progress)
            self.window = LogWindow()
        saved = self.step % config.save_interval == 0 or last
        if saved:
            self._validate(writer)
            self._checkpoint()
        if last:  # the last step finishes the run whatever came
            return None
        stopped_by = signals.agreed(self.ddp.all_sum, self.device)
        if stopped_by and not saved:  # no validation: the resumed run's loss log is the uninterrupted one's
            self._checkpoint()
        return stopped_by

    def _checkpoint(self) -> None:
        """Add the wall time since the last checkpoint to the training time, and save one."""
        now = time.time()
        self.train_seconds, self._clock = self.train_seconds + now - self._clock, now
        self.save_checkpoint()

    def _log(self, window: LogWindow, writer, progress: tqdm) -> None:
        sums = self.ddp.all_sum(torch.tensor([window.ce, window.kl, float(window.frames)]))
        seconds = time.time() - window.start
        record = {"step": self.step, "loss": round(sums[0].item() / window.tokens, 5),
                  "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": round(window.timed_tokens / seconds, 1),
                  "frames_per_s": round(sums[2].item() / seconds, 1)}
        if self.config.kl_weight > 0:
            record["kl"] = round(sums[1].item() / window.tokens, 5)
        if not self.ddp.is_main:
            return
        record.update(self._batch_stats())
        progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
        logger.info("step %d: %s", self.step, ", ".join(f"{k} {v}" for k, v in record.items() if k != "step"))
        for key in ("loss", "kl", "lr", "tokens_per_s", "frames_per_s", "llm_padding", "utts_per_batch"):
            if key in record:
                writer.add_scalar(f"train/{key}", record[key], self.step)
        _append_line(self.out_dir / "losses.jsonl", record)

    def _batch_stats(self) -> dict[str, float]:
        """The padding fraction of the LLM positions and the mean number of distinct utterances of
        the global batches since the last loss line (from the data order: the same after a resume)."""
        accum, interval = self.config.optim.accum_grad, self.config.log_interval
        first = (self.step - 1) // interval * interval
        batches = [self.sampler.global_batch(n) for n in range(first * accum, self.step * accum)]
        return {"llm_padding": round(padding_fraction(self.train_lengths, batches), 4),
                "utts_per_batch": round(utterances_per_batch(self.train_set.utt_index, batches), 2)}

    @torch.no_grad()
    def _validate(self, writer) -> None:
        if self.valid_set is None:
            return
        self.model.eval()
        count = min(len(self.valid_set), self.config.valid_examples)
        mine = list(range(self.ddp.rank, count, self.ddp.world_size))
        total = torch.zeros(2)
        for indices in self._valid_batches(mine):
            batch = collate([self.valid_set[(i, 0, 0)] for i in indices]).to(self.device)
            with self.autocast():
                out = self.model(batch, 1.0)
            total += torch.tensor([out["ce_sum"].item(), float(batch.num_target_tokens)])
        total = self.ddp.all_sum(total)
        self.model.train()
        if self.ddp.is_main:
            loss = total[0].item() / total[1].item()
            logger.info("step %d: validation loss %.4f on %d examples", self.step, loss, count)
            writer.add_scalar("valid/loss", loss, self.step)
            _append_line(self.out_dir / "losses.jsonl", {"step": self.step, "valid_loss": round(loss, 5)})

    def _valid_batches(self, mine: list[int]) -> list[list[int]]:
        """This rank's validation examples ``mine`` in batches of its share of ``optim.batch_size``
        examples or of ``optim.batch_tokens`` padded positions."""
        optim, ranks = self.config.optim, self.ddp.world_size
        if optim.batch_tokens:
            return budget_batches(self.valid_lengths, mine, max(1, optim.batch_tokens // ranks))
        size = max(1, optim.batch_size // ranks)
        return [mine[start:start + size] for start in range(0, len(mine), size)]

    def finish(self) -> None:
        """Write the final weights, the loss curve and mark ``self.stage_step`` done (rank 0)."""
        if not self.ddp.is_main:
            return
        weights = sllm_dir.weights_path(self.out_dir)
        last = sllm_dir.checkpoints(self.out_dir)[-1]
        with open(last / sllm_dir.WEIGHTS_FILE, "rb") as src, atomic_write(weights, "wb") as dst:
            shutil.copyfileobj(src, dst)
        plot_losses(self.out_dir / "losses.jsonl", self.out_dir / "loss_curve.png")
        if self.stage_step:
            self.stage_step.mark_done()
        logger.info("training done: %s (step %d), loss curve %s", weights,
                    self.step, self.out_dir / "loss_curve.png")


def llm_lengths(model: SpeechLLMModel, dataset: ImitationDataset) -> array:
    """Per example of ``dataset``, the length of its LLM input and response with speech input:
    the connector's frames of its features plus its text tokens. An interleaved input is mostly
    shorter: its text words take fewer positions than their speech."""
    frames = torch.from_numpy(np.asarray(dataset.lengths, dtype=np.int64))
    speech = model.connector.output_lengths(model.encoder.output_lengths(frames))
    total = speech + torch.from_numpy(np.asarray(dataset.text_tokens, dtype=np.int64))
    lengths = array("q")
    lengths.frombytes(total.numpy().astype(np.int64).tobytes())
    return lengths


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_log(path: Path, step: int) -> None:
    """Keep the complete lines of ``path`` up to ``step`` (a resumed run logs the rest again)."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")[:-1]
    kept = [line + b"\n" for line in lines if _step_of(line) is not None and _step_of(line) <= step]
    with atomic_write(path, "wb") as f:
        f.writelines(kept)


def _step_of(line: bytes) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def plot_losses(losses: Path, png: Path) -> None:
    """Training and validation loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in losses.read_text().splitlines()] if losses.exists() else []
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("valid_loss", "validation")):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), label=label, marker="o" if key == "valid_loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per response token")
    ax.set_title(png.parent.name)
    ax.legend()
    fig.tight_layout()
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)

