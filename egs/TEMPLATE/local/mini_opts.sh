# shellcheck shell=bash
# Sourced by run.sh when it runs on the synthetic mini corpus, with run.sh's own arguments: sets
# mini_opts, the mtbi.sh options that size the run for 2 CPU cores. run.sh passes them before its
# arguments, so an option given to run.sh wins. A real corpus uses the defaults of mtbi.sh.
#   tiny: within 30 minutes, so one seed of each baseline (RESULTS.md's tables come from
#         local/run_baselines.sh, three seeds). The benchmark takes 100 of the 200
#         test utterances (2500 questions per run); two jobs make the targets, and two SLLMs train
#         (and answer) at once, one thread each on any machine (the weights depend on the thread
#         count; conf/encoder_tiny.yaml fixes the encoder's too).
#   smol: SmolLM2-135M writes about 2 answers a second on 2 cores, so the teacher answers every
#         train task of 100 of the 2000 train utterances (1000 answers) and of 8 valid ones, and
#         the benchmark takes 10 test utterances (250 questions per system).
# shellcheck source=../utils/lib.sh
. utils/lib.sh
# shellcheck disable=SC2034  # mini_opts is read by run.sh, which sources this file
case "$(config_set_of "$@")" in
    smol) mini_opts=(--gen_opts "--max_utts 100" --gen_valid_opts "--max_utts 8" --bench_opts "--max_utts 10"
                     --gen_nj 2 --system_nj 2) ;;
    *) mini_opts=(--bench_opts "--max_utts 100" --gen_nj 2 --system_nj 2 --num_threads 1) ;;
esac
