#!/usr/bin/env bash
# The paper's three claims as one study (not part of run.sh; the recipe's RESULTS.md has its
# verdicts, plots and wall time). Run it from the recipe dir; options it does not know go to
# run.sh, e.g. local/run_study.sh --seeds 2 --config_set smol --ngpu 1.
#   1  the baselines with --seeds seeds (local/run_baselines.sh's table in RESULTS.md), and the
#      answers of every checkpoint of mtbi and mtbi_interleave     -> <expdir>/sllm_<tag>[_seed<k>]
#   2  a. "less supervised speech data": asr_sft, blsp and mtbi trained on each of --fractions of
#      the training utterances (nested subsets, data.utt_fraction)  -> <expdir>/sllm_<tag>_frac<P>[_seed<k>]
#   3  c. "interleaving makes alignment more efficient": ablations of the interleaving policy
#      (probability 1, ratio 0.7-0.9, spans of 4-8 words, a curriculum: always interleaved for the
#      first half of the steps, speech only after), with the answers of every checkpoint
#                                                                 -> <expdir>/sllm_mtbi_il_<name>[_seed<k>]
#   4  the report: each claim's verdict (paired tests, seeds pooled) into RESULTS.md
#                                                                 -> <expdir>/study/study_<set>.{md,json}, _data.png, _curves.png
# The generated training configs go to <expdir>/study/conf/; each names its recipe config as base.
set -euo pipefail
# shellcheck source=../utils/lib.sh
. utils/lib.sh
record_command "$0" "$@"  # the stamps of the results tables name it

seeds=3                    # training runs of every config
fractions="0.1 0.25 0.5"   # training shares of stage 2 (the full data is stage 1's)
study_stage=1
study_stop_stage=4
config_set=tiny
expdir=
test_set=                  # default: the benchmark of stage 1 (<expdir>/bench/<set>)
run_opts=()                # everything else, for run.sh
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds|--fractions|--study_stage|--study_stop_stage|--test_set)
            [ $# -ge 2 ] || { log "ERROR: $1 needs a value"; exit 1; }
            printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        --config_set|--expdir)
            [ $# -ge 2 ] || { log "ERROR: $1 needs a value"; exit 1; }
            printf -v "${1#--}" '%s' "$2"; run_opts+=("$1" "$2"); shift 2 ;;
        *) run_opts+=("$1"); shift ;;
    esac
done
for var in seeds study_stage study_stop_stage; do
    if ! [[ "${!var}" =~ ^[1-9][0-9]*$ ]]; then
        log "ERROR: --${var} must be a whole number of at least 1, got '${!var}'"; exit 1
    fi
done
resolve_config_set || exit 1
. ./path.sh
study_dir=${expdir}/study
curve_confs="${conf_dir}/train_mtbi.yaml ${conf_dir}/train_mtbi_interleave.yaml"
ablations="prob1 ratio70to90 span4to8 curriculum"  # stage 3's interleaving policies, mtbi_il_<name>
if [ "${study_stage}" -le 2 ] && [ "${study_stop_stage}" -ge 2 ]; then
    # The training-share configs of stage 2, written (and --fractions checked) before stage 1 runs.
    # shellcheck disable=SC2086  # fractions holds several numbers
    share_confs=$(python -m mtbi.bin.run_names share_configs --conf_dir "${conf_dir}" --out_dir "${study_dir}/conf" \
        --fractions ${fractions} --tags asr_sft blsp mtbi | tr '\n' ' ')
fi

if [ "${study_stage}" -le 1 ] && [ "${study_stop_stage}" -ge 1 ]; then
    log "Study stage 1: the baselines with ${seeds} seeds, and the checkpoints of mtbi and mtbi_interleave"
    ./run.sh --seeds "${seeds}" --compare_opts "--markdown RESULTS.md" "${run_opts[@]}"
    ./run.sh --stage 7 --stop_stage 7 --seeds "${seeds}" --train_confs "${curve_confs}" --bench_checkpoints true \
        "${run_opts[@]}"
fi

if [ "${study_stage}" -le 2 ] && [ "${study_stop_stage}" -ge 2 ]; then
    log "Study stage 2: asr_sft, blsp and mtbi on ${fractions} of the training utterances, ${seeds} seeds"
    ./run.sh --stage 6 --stop_stage 7 --seeds "${seeds}" --train_confs "${share_confs}" "${run_opts[@]}"
fi

if [ "${study_stage}" -le 3 ] && [ "${study_stop_stage}" -ge 3 ]; then
    max_steps=$(python -c "from mtbi.config import load_config; from mtbi.train.config import TrainConfig; \
print(load_config('${conf_dir}/train_mtbi_interleave.yaml', TrainConfig).optim.max_steps)")
    # name: the interleave options each ablation sets over train_mtbi_interleave.yaml
    declare -A policies=(
        [prob1]="prob: 1.0"
        [ratio70to90]="min_ratio: 0.7, max_ratio: 0.9"
        [span4to8]="min_span: 4, max_span: 8"
        [curriculum]="prob: 1.0, until_step: $((max_steps / 2))"
    )
    confs=
    mkdir -p "${study_dir}/conf"
    base=$(realpath -m --relative-to="${study_dir}/conf" "${conf_dir}/train_mtbi_interleave.yaml")
    for name in ${ablations}; do
        conf=${study_dir}/conf/train_mtbi_il_${name}.yaml
        printf 'base: %s\ndata:\n  interleave: {%s}\n' "${base}" "${policies[${name}]}" > "${conf}"
        confs+=" ${conf}"
    done
    log "Study stage 3: interleaving ablations (${ablations}), ${seeds} seeds, with their checkpoints' answers"
    ./run.sh --stage 6 --stop_stage 7 --seeds "${seeds}" --train_confs "${confs}" --bench_checkpoints true \
        "${run_opts[@]}"
fi

if [ "${study_stage}" -le 4 ] && [ "${study_stop_stage}" -ge 4 ]; then
    if [ -z "${test_set}" ]; then
        benches=("${expdir}"/bench/*/bench.jsonl)
        [ -f "${benches[0]}" ] || { log "ERROR: no benchmark in ${expdir}/bench/; run stage 1 first"; exit 1; }
        test_set=$(basename "$(dirname "${benches[0]}")")
    fi
    results=${expdir}/results_${test_set}.json
    [ -f "${results}" ] || { log "ERROR: ${results} is missing; it is made by stage 1 (run.sh stage 8)"; exit 1; }
    metric=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['headline_metric'])" "${results}")
    log "Study stage 4: the report on ${test_set} (${metric}) -> ${study_dir}/study_${test_set}.md and RESULTS.md"
    teacher_text=$(python -m mtbi.bin.run_names teacher --expdir "${expdir}")
    # shellcheck disable=SC2046,SC2086  # one curve system per ablation
    python -m mtbi.bin.study --exp_dir "${expdir}" --test_set "${test_set}" --metric "${metric}" \
        --teacher_hyp "${teacher_text}/bench_${test_set}/hyp.jsonl" \
        --curve_systems mtbi mtbi_interleave $(printf 'mtbi_il_%s ' ${ablations}) \
        --out "${study_dir}/study_${test_set}" --markdown RESULTS.md --made_by "${MTBI_COMMAND}"
fi
log "Successfully finished. [elapsed=${SECONDS}s]"
