"""The tiny teacher of the embedded default: a small Llama-style causal LM trained in stage 4.

Instruction data is made by rule from the mini corpus transcripts: every task of the bank
(train and held-out tasks alike: the teacher is the text LLM that knows all tasks), every
prompt paraphrase, the rule's answer as the response. The result is a normal HF model dir
(config, safetensors, tokenizer with a chat template), so the rest of the code treats it as
any other teacher.
"""

from __future__ import annotations

import logging
import math
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
from mtbi.tasks.bank import TaskBank
from mtbi.tasks.generation import GenerationParams, HFGenerator
from mtbi.tasks.mini_rules import rule_answer
from mtbi.tasks.prompting import fill_prompt, normalize_transcript, render_prompt

logger = logging.getLogger(__name__)

# A compact chat template (one special token per role) keeps the tiny teacher's inputs short.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


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


def _batch(tokenized: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(ids) for ids, _ in tokenized)
    input_ids = torch.full((len(tokenized), width), pad_id)
    labels = torch.full((len(tokenized), width), -100)
    mask = torch.zeros((len(tokenized), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(tokenized):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, prompt_len:len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, :len(ids)] = 1
    return input_ids, mask, labels


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
                        "(e.g. conf/teacher_smollm2.yaml) for real corpora")
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
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / config.warmup_steps,
        0.5 * (1 + math.cos(math.pi * min(1.0, step / config.steps)))))

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
        input_ids, mask, labels = _batch([_tokenize(tokenizer, e) for _, e in kept], tokenizer.pad_token_id)
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:],
                                                       ignore_index=-100, reduction="none")
        counts = (labels[:, 1:] != -100).sum(dim=1)
        loss = token_loss.sum() / counts.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        for (name, _), value in zip(kept, (token_loss.sum(dim=1) / counts).tolist()):
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
    generator = HFGenerator(model_dir, GenerationParams(max_new_tokens=40, batch_size=64))

    def render(prompt: str, transcript: str) -> str:
        return render_prompt(generator.tokenizer, prompt, transcript)

    examples = rule_examples(texts, bank, rng, render)
    answers = generator.generate([e.prompt for e in examples])
    correct: dict[str, list[bool]] = {}
    for example, answer in zip(examples, answers):
        correct.setdefault(example.task, []).append(answer == example.answer)
    return {task: sum(hits) / len(hits) for task, hits in correct.items()}
