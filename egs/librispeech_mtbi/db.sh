# shellcheck shell=bash
# Corpus location: the LibriSpeech directory that holds train-clean-100, dev-clean, ...
# Leave empty to build and use the synthetic mini corpus (no download needed).
LIBRISPEECH=${LIBRISPEECH:-}
