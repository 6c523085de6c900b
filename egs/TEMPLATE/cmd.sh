# shellcheck shell=bash
# How mtbi.sh launches parallel jobs: ${train_cmd} JOB=1:N <log> <command>.
#   local: utils/run.pl runs the jobs on this machine.
#   slurm: utils/slurm.pl submits one sbatch array job; extra sbatch options (partition,
#          account) go in MTBI_SBATCH_OPTS, e.g. MTBI_SBATCH_OPTS="-p gpu -A myproject".
cmd_backend=${MTBI_CMD_BACKEND:-local}

case "${cmd_backend}" in
    local)
        export train_cmd="utils/run.pl"
        export cuda_cmd="utils/run.pl"
        export decode_cmd="utils/run.pl"
        ;;
    slurm)
        export train_cmd="utils/slurm.pl --mem 4G --time 24:00:00"
        export cuda_cmd="utils/slurm.pl --mem 32G --gpu 1 --time 72:00:00"
        export decode_cmd="utils/slurm.pl --mem 8G --gpu 1 --time 12:00:00"
        ;;
    *)
        echo "cmd.sh: unknown MTBI_CMD_BACKEND '${cmd_backend}'; use local or slurm" >&2
        return 1
        ;;
esac
