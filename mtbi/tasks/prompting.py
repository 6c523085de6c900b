"""Prompts as the LLM sees them: the transcript in its slot, rendered by the chat template."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from mtbi.errors import MtbiError
from mtbi.tasks.bank import TRANSCRIPT_SLOT


def normalize_transcript(text: str) -> str:
    """The transcript as the teacher reads it: LibriSpeech's all-caps text in lower case,
    other text unchanged; whitespace collapsed."""
    text = " ".join(text.split())
    return text.lower() if text.isupper() else text


def fill_prompt(prompt: str, transcript: str) -> str:
    """Put ``transcript`` into the prompt's ``{transcript}`` slot (no other formatting)."""
    return prompt.replace(TRANSCRIPT_SLOT, transcript)


def with_speech_slot(question: str) -> str:
    """``question`` with one ``{transcript}`` slot, where the speech goes: its own, or else one
    after the question, separated by a space (every prompt of the task bank ends with its slot)."""
    slots = question.count(TRANSCRIPT_SLOT)
    if slots > 1:
        raise MtbiError(f"question '{question}' has {slots} {TRANSCRIPT_SLOT} slots; the speech goes into one")
    if slots == 1:
        return question
    question = question.strip()
    return f"{question} {TRANSCRIPT_SLOT}" if question else TRANSCRIPT_SLOT


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, transcript: str) -> str:
    """The full input text for the LLM: the user turn through the chat template, ready for the
    assistant's answer; plain ``prompt + newline`` for a model without a template."""
    content = fill_prompt(prompt, transcript)
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
    return content + "\n"
