"""A tiny, untrained teacher LLM made in the test: real tokenizer, real Llama weights."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mtbi.mini.tiny_teacher import build_tokenizer

SENTENCES = [
    "the happy dog found two red apples in the park",
    "the sad cat sold seven blue kites in the garden yesterday",
    "the brave horse washed three green hats in the kitchen this morning",
    "the lonely fox carried eleven yellow ropes in the barn",
]


def make_random_teacher(out_dir: Path, seed: int = 0) -> Path:
    """Save a 2-layer random Llama with a trained tokenizer and chat template to ``out_dir``."""
    tokenizer = build_tokenizer(SENTENCES * 5 + ["Repeat: Who is this about? user assistant"], 200)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=128, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
