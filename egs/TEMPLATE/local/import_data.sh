#!/usr/bin/env bash
# Stage 1 from data made elsewhere: data/<set> for each --sets name, imported with
# python -m mtbi.bin.import_data_dir from a Kaldi or ESPnet data dir (--src_dirs) or a lhotse
# manifest (--lhotse_manifests), one per set in the order of --sets (mtbi.sh passes train_set,
# valid_set, test_sets). A lhotse manifest is a cuts manifest, or a supervisions manifest whose
# recordings manifest lies beside it with "recordings" in place of "supervisions" in its name
# (as lhotse recipes name them). A recipe's local/data.sh may call it with its sources:
#     local/import_data.sh --src_dirs "/x/data/train /x/data/dev /x/data/test" "$@"
# or be a link to it, with the options in a file that run.sh passes on:
#     ./run.sh --local_data_opts "--config conf/import_data.conf"   (lines: --src_dirs /x/train ...)
set -euo pipefail
# shellcheck source=../utils/lib.sh
. utils/lib.sh

sets="train dev test"
src_dirs=          # Kaldi/ESPnet data dirs, one per set
lhotse_manifests=  # lhotse manifests, one per set
# shellcheck disable=SC2034  # nj and allow_upsample come from mtbi.sh: an import reads no audio
nj=4
# shellcheck disable=SC2034
allow_upsample=false
help_message="Usage: $0 --sets \"<names>\" (--src_dirs \"<data dir per set>\" | --lhotse_manifests \"<manifest per set>\")"

. utils/parse_options.sh

read -r -a set_names <<< "${sets}"
if [ -n "${src_dirs}" ] && [ -z "${lhotse_manifests}" ]; then
    read -r -a sources <<< "${src_dirs}"
elif [ -n "${lhotse_manifests}" ] && [ -z "${src_dirs}" ]; then
    read -r -a sources <<< "${lhotse_manifests}"
else
    echo "$0: give either --src_dirs or --lhotse_manifests, one per set of --sets (${sets})" >&2; exit 1
fi
if [ ${#sources[@]} -ne ${#set_names[@]} ]; then
    echo "$0: ${#sources[@]} sources for the ${#set_names[@]} sets '${sets}': give one per set, in that order" >&2
    exit 1
fi

for i in "${!set_names[@]}"; do
    dset=${set_names[i]}
    from=${sources[i]}
    name=$(basename "${from}")
    if [ -n "${src_dirs}" ]; then
        args=(--src "${from}")
    elif [[ "${name}" == *supervisions* ]]; then
        args=(--lhotse_recordings "$(dirname "${from}")/${name/supervisions/recordings}" --lhotse_supervisions "${from}")
    else
        args=(--lhotse_cuts "${from}")
    fi
    log "data/${dset} <- ${from}"
    python -m mtbi.bin.import_data_dir "${args[@]}" --out_dir "data/${dset}"
done
