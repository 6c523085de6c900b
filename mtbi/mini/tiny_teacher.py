"""The tiny teacher of the embedded default: a small Llama-style causal LM trained in stage 4.

Instruction data is made by rule from the mini corpus transcripts: every task of the bank
(train and held-out tasks alike: the teacher is the text LLM that knows all tasks), every
prompt paraphrase, the rule's answer as the response. The result is a normal HF model dir
(config, safetensors, tokenizer with a chat template), so the rest of the code treats it as
any other teacher.
"""

from __future__ import annotations

import logging
import random
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tokenizers import SentencePieceBPETokenizer
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mtbi.errors import MtbiError
from mtbi.mini.rules import rule_answer
from mtbi.tasks.bank import TaskBank
from mtbi.tasks.generation import GenerationParams, HFGenerator
from mtbi.tasks.prompting import fill_prompt, normalize_transcript, render_prompt
from mtbi.train.schedule import warmup_cosine

logger = logging.getLogger(__name__)

# A compact chat template (one special token per role) keeps the tiny teacher's inputs short.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# Training examples are packed into rows of this many tokens (no padding between examples:
# about 25% less compute per step than padding each example to the longest of its batch).
PACK_WIDTH = 128


@dataclass(frozen=True)
class TinyTeacherConfig:
    """Size and training schedule of the tiny teacher (``conf/teacher_tiny.yaml``, ``tiny:``)."""

    vocab_size: int = 800
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    steps: int = 2000
    batch_size: int = 48
    learning_rate: float = 2e-3
    warmup_steps: int = 60
    loss_sampling: float = 0.7  # share of each batch drawn by task loss; the rest uniformly
    seed: int = 0
    num_threads: int = 0  # torch CPU threads; 0: torch's default


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str       # rendered input, ends where the answer starts
    answer: str


def rule_example(transcript: str, name: str, bank: TaskBank, rng: random.Random,
                 render: Callable[[str, str], str]) -> Example | None:
    """Task ``name`` asked about ``transcript`` with a random prompt, answered by rule
    (None when the task has no rule answer for it)."""
    task = bank.tasks[name]
    answer = rule_answer(task.rule, transcript) if task.rule else None
    return None if answer is None else Example(name, render(rng.choice(task.prompts), transcript), answer)


def rule_examples(transcripts: list[str], bank: TaskBank, rng: random.Random,
                  render: Callable[[str, str], str]) -> list[Example]:
    """One example per (transcript, task) with a random prompt of the task, answered by rule."""
    examples = [rule_example(normalize_transcript(text), name, bank, rng, render)
                for text in transcripts for name in bank.tasks]
    return [e for e in examples if e is not None]


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE tokenizer (whitespace as ``▁``) trained on ``texts``, with every
    printable ASCII character in its alphabet and a ChatML chat template."""
    backend = SentencePieceBPETokenizer()
    backend.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                initial_alphabet=list(string.printable), show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<|end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _tokenize(tokenizer: PreTrainedTokenizerFast, example: Example) -> tuple[list[int], int]:
    prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, len(prompt_ids)


def pack_examples(tokenized: list[tuple[list[int], int]], pad_id: int,
                  width: int = PACK_WIDTH) -> tuple[torch.Tensor, ...]:
    """Pack tokenized examples (ids, prompt length) into rows of ``width`` tokens, longest first
    into the first row with room, with no padding between them. Returns input ids, position ids
    (restarting at 0 for each example, which makes HF attention keep the examples apart), labels
    (-100 outside answers) and the index of the example each token belongs to (-1 for padding)."""
    width = max([width] + [len(ids) for ids, _ in tokenized])
    rows: list[list[int]] = []
    filled: list[int] = []
    for index in sorted(range(len(tokenized)), key=lambda i: -len(tokenized[i][0])):
        size = len(tokenized[index][0])
        row = next((r for r, used in enumerate(filled) if used + size <= width), None)
        if row is None:
            rows.append([])
            filled.append(0)
            row = len(rows) - 1
        rows[row].append(index)
        filled[row] += size
    input_ids = torch.full((len(rows), width), pad_id)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    owner = torch.full((len(rows), width), -1)
    for row, members in enumerate(rows):
        start = 0
        for index in members:
            ids, prompt_len = tokenized[index]
            end = start + len(ids)
            input_ids[row, start:end] = torch.tensor(ids)
            positions[row, start:end] = torch.arange(len(ids))
            labels[row, start + prompt_len:end] = torch.tensor(ids[prompt_len:])
            owner[row, start:end] = index
            start = end
        positions[row, start:] = torch.arange(width - start)  # the row's padding is one more "example"
    return input_ids, positions, labels, owner


def packed_losses(model: LlamaForCausalLM, batch: tuple[torch.Tensor, ...],
                  num_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean answer-token loss of a packed batch and each example's own mean answer loss."""
    input_ids, positions, labels, owner = batch
    logits = model(input_ids=input_ids, position_ids=positions, use_cache=False).logits
    targets = labels[:, 1:]
    answer = targets != -100
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1][answer], targets[answer], reduction="none")
    example = owner[:, 1:][answer]
    sums = torch.zeros(num_examples).index_add_(0, example, per_token.detach())
    return per_token.mean(), sums / torch.bincount(example, minlength=num_examples)


def train_tiny_teacher(train_texts: list[str], eval_texts: list[str], bank: TaskBank,
                       config: TinyTeacherConfig, out_dir: str | Path) -> dict:
    """Train the tiny teacher on rule data from ``train_texts``, save it to ``out_dir`` and
    return its report: exact-match accuracy per task on ``eval_texts`` and the time taken."""
    start = time.time()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    if not train_texts:
        raise MtbiError("no training transcripts for the tiny teacher; run stage 1 first")
    plain = rule_examples(train_texts, bank, rng, fill_prompt)
    if all(e.task == "transcription" for e in plain):
        raise MtbiError("the training transcripts are not mini-corpus sentences, so the rule-trained "
                        "tiny teacher cannot learn from them; use a real teacher config "
                        "(e.g. conf/smol/teacher.yaml) for real corpora")
    prompts = [p for task in bank.tasks.values() for p in task.prompts]
    tokenizer = build_tokenizer([f"{e.prompt} {e.answer}" for e in plain] + prompts, config.vocab_size)

    def render(prompt: str, transcript: str) -> str:
        return render_prompt(tokenizer, prompt, transcript)

    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size, max_position_embeddings=256, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None))
    logger.info("tiny teacher: %.2fM parameters, vocabulary %d", model.num_parameters() / 1e6, len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps, decay_start=0))

    # A share of each batch (loss_sampling) is drawn in proportion to each task's recent answer
    # loss, so tasks not learned yet get more of the steps; the rest keeps every task in view.
    transcripts = [normalize_transcript(t) for t in train_texts]
    names = [n for n, t in bank.tasks.items() if t.rule]
    task_loss = {name: 1.0 for name in names}
    model.train()
    progress = tqdm(range(config.steps), desc="training tiny teacher", unit="step", mininterval=5.0)
    for step in progress:
        total = sum(task_loss.values())
        weights = [config.loss_sampling * task_loss[n] / total + (1 - config.loss_sampling) / len(names)
                   for n in names]
        chosen = rng.choices(names, weights, k=config.batch_size)
        examples = [rule_example(rng.choice(transcripts), name, bank, rng, render) for name in chosen]
        kept = [(name, e) for name, e in zip(chosen, examples) if e is not None]
        tokenized = [_tokenize(tokenizer, e) for _, e in kept]
        loss, example_loss = packed_losses(model, pack_examples(tokenized, tokenizer.pad_token_id), len(kept))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        for (name, _), value in zip(kept, example_loss.tolist()):
            task_loss[name] = 0.9 * task_loss[name] + 0.1 * value
        if step % 50 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
            logger.debug("step %d loss %.4f task losses %s", step, loss.item(),
                         {n: round(v, 3) for n, v in task_loss.items()})
    train_seconds = time.time() - start

    out_dir = Path(out_dir)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    accuracy = evaluate_teacher(out_dir, eval_texts, bank, random.Random(config.seed + 1))
    report = {"parameters": model.num_parameters(), "train_seconds": round(train_seconds, 1),
              "final_loss": round(loss.item(), 4), "steps": config.steps, "accuracy": accuracy}
    logger.info("tiny teacher trained in %.0f s; accuracy per task: %s", train_seconds,
                ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    return report


def evaluate_teacher(model_dir: str | Path, texts: list[str], bank: TaskBank, rng: random.Random) -> dict[str, float]:
    """Exact-match accuracy per task of the teacher in ``model_dir`` against the rule answers,
    one random prompt per (sentence, task)."""
    generator = HFGenerator(model_dir, GenerationParams(max_new_tokens=40, batch_size=256))

    def render(prompt: str, transcript: str) -> str:
        return render_prompt(generator.tokenizer, prompt, transcript)

    examples = rule_examples(texts, bank, rng, render)
    answers = generator.generate([e.prompt for e in examples])
    correct: dict[str, list[bool]] = {}
    for example, answer in zip(examples, answers):
        correct.setdefault(example.task, []).append(answer == example.answer)
    return {task: sum(hits) / len(hits) for task, hits in correct.items()}
