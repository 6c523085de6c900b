#!/usr/bin/env bash
# The smol learning run: whisper-base + SmolLM2-135M-Instruct (conf/smol/) trained long enough
# to follow the speech, sized for about 90 minutes on 2 CPU cores for the mini corpus (the
# LibriSpeech recipe's RESULTS.md has its table and wall time).
# SmolLM2 answers transcription and continuation (the single tasks of asr_sft and blsp) and 2 of
# the 8 other train tasks about 320 train utterances, and all tasks about 12 dev utterances; each
# SLLM trains 300 steps of about 9 examples (900 padded positions) with a validation loss every
# 50 steps; the benchmark asks 25 questions about each of 50 test utterances. Writes exp_smol_learn/.
# Options go to run.sh, e.g. local/run_smol.sh --stage 6; on a GPU add --ngpu 1 and raise the sizes.
set -euo pipefail
# shellcheck source=../utils/lib.sh
. utils/lib.sh
record_command "$0" "$@"  # the stamps of the results tables name it

./run.sh --config_set smol --expdir exp_smol_learn \
    --gen_opts "--max_utts 320 --every_utt_tasks transcription,continuation --tasks_per_utt 2" \
    --gen_valid_opts "--max_utts 12 --tasks_per_utt 0" \
    --bench_opts "--max_utts 50" \
    --train_opts "--set optim.max_steps=300 optim.warmup_steps=20 save_interval=50 valid_examples=48" \
    --compare_opts "--markdown RESULTS.md" \
    "$@"
