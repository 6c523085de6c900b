"""The embedded mini world, the test bench of the toolkit: espeak-ng speech synthesis, the mini
corpus in real corpus layouts, the rules that answer every task about a mini sentence, and the
tiny rule-taught teacher LLM. Nothing below this package imports it."""
