# shellcheck shell=bash
# Corpus location: a Common Voice language directory (holds validated.tsv, dev.tsv, test.tsv
# and clips/), e.g. /data/cv-corpus-17.0-2024-03-15/en.
# Leave empty to build and use the synthetic mini corpus (no download needed).
COMMONVOICE=${COMMONVOICE:-}
