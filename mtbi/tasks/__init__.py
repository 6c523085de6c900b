"""Task bank, prompts, and the teacher LLM that answers them (imitation targets)."""
