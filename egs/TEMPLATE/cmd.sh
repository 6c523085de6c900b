# shellcheck shell=bash
# How mtbi.sh launches parallel jobs: ${train_cmd} JOB=1:N <log> <command>. mtbi.sh itself adds
# --gpu N to the jobs that use GPUs (see its --ngpu); the rest of a job's resources is site policy:
#   local: utils/run.pl runs the jobs on this machine; a job with --gpu N waits for N free GPUs of
#          MTBI_GPUS (default: all GPUs here) and sees them as CUDA_VISIBLE_DEVICES.
#   slurm: utils/slurm.pl submits one sbatch array job per step; partition, GPU type, cores and
#          memory per GPU and the time limit come from conf/slurm.conf (an example linked from
#          egs/TEMPLATE/conf/slurm.conf: edit it for your cluster). Extra sbatch options, e.g. the
#          account, can also go in MTBI_SBATCH_OPTS="-A myproject".
cmd_backend=${MTBI_CMD_BACKEND:-local}

case "${cmd_backend}" in
    local)
        export train_cmd="utils/run.pl"
        export cuda_cmd="utils/run.pl"
        export decode_cmd="utils/run.pl"
        ;;
    slurm)
        export train_cmd="utils/slurm.pl"
        export cuda_cmd="utils/slurm.pl"
        export decode_cmd="utils/slurm.pl"
        ;;
    *)
        echo "cmd.sh: unknown MTBI_CMD_BACKEND '${cmd_backend}'; use local or slurm" >&2
        return 1
        ;;
esac
