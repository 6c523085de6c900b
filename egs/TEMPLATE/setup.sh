#!/usr/bin/env bash
# Creates a new recipe from TEMPLATE: links the shared shell (mtbi.sh, path.sh, cmd.sh, utils,
# local/{run_baselines,run_study,mini_opts,import_data}.sh), copies conf/ (the recipe's own configs)
# and writes run.sh, db.sh and a local/data.sh stub, the one corpus-specific file.
#
#   egs/TEMPLATE/setup.sh egs/mycorpus_mtbi
set -euo pipefail

if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
    echo "Usage: $0 <new recipe dir, e.g. egs/mycorpus_mtbi>" >&2; exit 1
fi
target=$1
template="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
if [ -e "${target}" ]; then
    echo "$0: ${target} already exists; choose a new directory" >&2; exit 1
fi
mkdir -p "${target}/local" "${target}/conf"
rel=$(realpath --relative-to="${target}" "${template}")
for f in mtbi.sh path.sh cmd.sh utils; do
    ln -s "${rel}/${f}" "${target}/${f}"
done
for f in run_baselines.sh run_study.sh mini_opts.sh import_data.sh; do
    ln -s "../${rel}/local/${f}" "${target}/local/${f}"
done
# conf/ is copied, not linked: the recipe's configs (the config sets tiny, smol/ and real/, the task
# split, the Slurm site settings of conf/slurm.conf) are its own to edit, and an edit never
# changes another recipe.
cp -R "${template}/conf/." "${target}/conf/"

name=$(basename "${target}")
corpus=${name%_mtbi}
db_var=$(echo "${corpus}" | tr '[:lower:]-' '[:upper:]_')

cat > "${target}/db.sh" << EOF
# shellcheck shell=bash
# Corpus location for ${corpus}.
${db_var}=\${${db_var}:-}
EOF

cat > "${target}/run.sh" << 'EOF'
#!/usr/bin/env bash
# MTBI recipe. Options go to mtbi.sh; see ./mtbi.sh --help.
set -euo pipefail
# shellcheck source=utils/lib.sh
. utils/lib.sh
record_command "$0" "$@"  # the stamps of the results tables name it

train_set=train
valid_set=dev
test_sets="test"

./mtbi.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    "$@"
EOF

cat > "${target}/local/data.sh" << EOF
#!/usr/bin/env bash
# Stage 1 for ${corpus}: write data/<set>/{wav.scp,text,utt2spk,spk2utt} for each --sets name,
# e.g. with python -m mtbi.bin.prepare_data or a reader of your own (see egs/librispeech_mtbi), or
# from existing Kaldi/ESPnet data dirs or lhotse manifests with local/import_data.sh (see its header).
set -euo pipefail

sets="train dev test"
nj=4
allow_upsample=false
. utils/parse_options.sh
. ./db.sh

echo "\$0: write the data preparation of ${corpus} here (corpus path: \${${db_var}})" >&2
exit 1
EOF
chmod +x "${target}/run.sh" "${target}/local/data.sh"
echo "Created ${target}: write ${target}/local/data.sh and set ${db_var} in ${target}/db.sh"
