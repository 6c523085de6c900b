"""Benchmark building, inference, scoring, reports and plots (stages 7-8)."""
