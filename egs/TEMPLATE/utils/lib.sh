# shellcheck shell=bash
# The recipe shell's shared functions, sourced (never run) by mtbi.sh, local/run_study.sh,
# local/mini_opts.sh and the recipes' local/data.sh, from the recipe dir: . utils/lib.sh

# log MESSAGE...: one line on stderr with the time and the caller's file, line and function.
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# config_set_of ARGS...: the value of the last --config_set among a script's arguments, else tiny.
config_set_of() {
    local found=tiny
    while [ $# -gt 0 ]; do
        case "$1" in
            --config_set|--config-set) found=${2:-}; shift ;;
            --config_set=*|--config-set=*) found=${1#*=} ;;
        esac
        shift
    done
    echo "${found}"
}

# resolve_config_set: the configs of ${config_set}: tiny (conf/teacher_tiny.yaml,
# conf/encoder_tiny.yaml, conf/train_*.yaml, exp/), or a folder of conf/ holding teacher.yaml and
# encoder.yaml (smol, real: conf/<set>/, exp_<set>/). Sets conf_dir, and teacher_conf,
# encoder_conf and expdir where they are empty; an unknown set fails before anything is made.
resolve_config_set() {
    : "${config_set:?}"  # the caller's option
    if [ "${config_set}" = tiny ]; then
        conf_dir=conf
        teacher_conf=${teacher_conf:-${conf_dir}/teacher_tiny.yaml}
        encoder_conf=${encoder_conf:-${conf_dir}/encoder_tiny.yaml}
        expdir=${expdir:-exp}
    elif [ -f "conf/${config_set}/teacher.yaml" ] && [ -f "conf/${config_set}/encoder.yaml" ]; then
        conf_dir=conf/${config_set}
        teacher_conf=${teacher_conf:-${conf_dir}/teacher.yaml}
        encoder_conf=${encoder_conf:-${conf_dir}/encoder.yaml}
        expdir=${expdir:-exp_${config_set}}
    else
        log "ERROR: --config_set ${config_set}: conf/${config_set}/teacher.yaml and encoder.yaml not found; use tiny, smol or real"
        return 1
    fi
}

# record_command "$0" "$@": export MTBI_COMMAND, the command the user ran, unless a script that
# called this one set it already; the stamps of the results tables name it.
record_command() {
    if [ -z "${MTBI_COMMAND:-}" ]; then
        MTBI_COMMAND=$(printf '%q ' "$@")
        export MTBI_COMMAND=${MTBI_COMMAND% }
    fi
}
