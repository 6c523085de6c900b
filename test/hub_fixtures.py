"""A Hugging Face hub cache that a test builds itself: models served by hub id, offline.

The layout is huggingface_hub's (``models--<owner>--<name>/{refs/<branch>,blobs/,snapshots/<commit>/}``,
snapshot files linking to content-addressed blobs), so ``snapshot_download`` finds a model there
with ``HF_HUB_OFFLINE=1`` exactly as it finds one downloaded earlier.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_hub_cache(cache: Path, repo_id: str, model_dir: Path, branch: str = "main") -> str:
    """Put the files of ``model_dir`` into the hub cache ``cache`` (HF_HUB_CACHE) as a commit of
    ``repo_id`` that ``branch`` points to; return the commit hash."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    digest = hashlib.sha1()
    for path in files:
        digest.update(str(path.relative_to(model_dir)).encode() + hashlib.sha256(path.read_bytes()).digest())
    commit = digest.hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for path in files:
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(path.read_bytes())
        link = repo / "snapshots" / commit / path.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return commit


def make_standin_llm(out_dir: Path, texts: list[str]) -> Path:
    """A tiny random Qwen2 instruct LLM (Qwen2ForCausalLM, ChatML chat template) in ``out_dir``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mtbi.mini.tiny_teacher import build_tokenizer

    tokenizer = build_tokenizer(texts, 300)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None))
    # Random weights would repeat a chat marker, which decodes to nothing; a real LLM writes words.
    model.generation_config.suppress_tokens = [i for i in tokenizer.added_tokens_decoder if i != tokenizer.eos_token_id]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_standin_whisper(out_dir: Path, n_mels: int = 128) -> Path:
    """A tiny random Whisper of large-v3's layout (WhisperForConditionalGeneration, 128 mel bins,
    a 30 s window of 1500 positions) in ``out_dir``."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(
        num_mel_bins=n_mels, d_model=64, encoder_layers=2, encoder_attention_heads=4, decoder_layers=1,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
        max_target_positions=64, vocab_size=51866)).save_pretrained(out_dir)  # large-v3: 51866 tokens
    return out_dir
