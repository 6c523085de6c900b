"""The key that names one question about one utterance in targets.jsonl, bench.jsonl and hyp.jsonl
(without the heavy imports of stage 5, so that scoring starts fast)."""

from __future__ import annotations


def record_key(record: dict) -> tuple[str, str, str]:
    """The (utt, task, prompt_id) key of a targets.jsonl or hyp.jsonl line."""
    return (record["utt"], record["task"], record["prompt_id"])
