"""Stage 4: make the teacher LLM and the speech encoder ready as model dirs."""
