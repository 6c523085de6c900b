#!/usr/bin/env python3
"""Benchmark: a tiny-teacher training step on packed rows (the default) against the same
examples padded to the longest of their batch (the baseline), measured in the same run.

    tools/venv/bin/python tools/bench/teacher_packing.py [--steps 20] [--threads 2]

Builds the tiny teacher of conf/teacher_tiny.yaml on rule examples of generated mini-corpus
sentences, then times --steps optimizer steps of each kind on the same batches and prints the
seconds a step, the share of padding tokens of each layout and the speed-up.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mtbi.bench.stamp import table_stamp
from mtbi.mini.corpus import generate_sentences, load_lexicon
from mtbi.mini.tiny_teacher import TinyTeacherConfig, _tokenize, build_tokenizer, pack_examples, packed_losses, rule_example, rule_examples
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.prompting import fill_prompt, normalize_transcript, render_prompt


def padded_loss(model: LlamaForCausalLM, tokenized: list[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """The baseline: each example padded to the longest of the batch, with an attention mask."""
    width = max(len(ids) for ids, _ in tokenized)
    input_ids = torch.full((len(tokenized), width), pad_id)
    labels = torch.full((len(tokenized), width), -100)
    mask = torch.zeros((len(tokenized), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(tokenized):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, prompt_len:len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, :len(ids)] = 1
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    torch.set_num_threads(args.threads)
    config, bank, rng = TinyTeacherConfig(), load_task_bank(), random.Random(0)
    texts = [normalize_transcript(s) for s in generate_sentences(2000, rng, set(), load_lexicon())]
    plain = rule_examples(texts, bank, rng, fill_prompt)
    tokenizer = build_tokenizer([f"{e.prompt} {e.answer}" for e in plain], config.vocab_size)
    names = [n for n, t in bank.tasks.items() if t.rule]
    batches = []
    for _ in range(args.steps + 2):
        examples = [rule_example(rng.choice(texts), rng.choice(names), bank, rng,
                                 lambda p, t: render_prompt(tokenizer, p, t)) for _ in range(config.batch_size)]
        batches.append([_tokenize(tokenizer, e) for e in examples if e is not None])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size, max_position_embeddings=256, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pad_id = tokenizer.pad_token_id
    layouts = {"padded (baseline)": lambda b: padded_loss(model, b, pad_id),
               "packed": lambda b: packed_losses(model, pack_examples(b, pad_id), len(b))[0]}
    seconds = {}
    for name, loss_of in layouts.items():
        for batch in batches[:2]:  # warm-up
            loss_of(batch).backward()
        start = time.perf_counter()
        for batch in batches[2:]:
            optimizer.zero_grad()
            loss_of(batch).backward()
            optimizer.step()
        seconds[name] = (time.perf_counter() - start) / args.steps
    tokens = sum(len(ids) for b in batches[2:] for ids, _ in b)
    padded = sum(len(b) * max(len(ids) for ids, _ in b) for b in batches[2:])
    packed = sum(pack_examples(b, pad_id)[0].numel() for b in batches[2:])
    print(f"{args.steps} steps of {config.batch_size} examples, {args.threads} threads")
    print(f"padded (baseline): {seconds['padded (baseline)']:.3f} s a step, padding {1 - tokens / padded:.1%} of tokens")
    print(f"packed:            {seconds['packed']:.3f} s a step, padding {1 - tokens / packed:.1%} of tokens")
    print(f"speed-up: {seconds['padded (baseline)'] / seconds['packed']:.2f}x")


if __name__ == "__main__":
    main()
