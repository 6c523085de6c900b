#!/usr/bin/env bash
# Command-line option parser for recipe scripts (Kaldi parse_options.sh semantics).
#
# Usage, inside a script, after the defaults are defined:
#   nj=4; use_gpu=false; help_message="Usage: $0 [options] <data-dir>"
#   . utils/parse_options.sh || exit 1
#   # "$@" now holds the positional arguments.
#
# Accepted forms: --foo-bar VALUE, --foo_bar VALUE, --foo-bar=VALUE (all set
# $foo_bar, which must already be defined), --config FILE (a file of
# "--opt value" or "--opt=value" lines, '#' comment lines allowed; config
# values have lower priority than command-line options), --help / -h (prints
# $help_message on stderr and exits 0), and "--" (ends the options).
# Variables whose current value is true/false only accept true/false.
# Values are assigned literally (never eval'ed). Parsing stops at the first
# argument that does not start with "--".

__po_die() {
  echo "parse_options.sh: $*" >&2
  exit 1
}

# __po_set OPTION VALUE: assign VALUE to the variable named by OPTION.
__po_set() {
  local __po_name=${1#--}
  __po_name=${__po_name//-/_}
  [[ $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ && -n ${!__po_name+x} ]] ||
    __po_die "unknown option $1"
  case ${!__po_name} in
    true|false)
      [[ $2 == true || $2 == false ]] ||
        __po_die "expected \"true\" or \"false\": $1 $2" ;;
  esac
  printf -v "$__po_name" '%s' "$2"
}

# __po_read_config FILE: append the file's options to __po_cfg (name, value pairs).
__po_read_config() {
  local __po_line __po_opt
  [[ -r $1 ]] || __po_die "missing config '$1'"
  while IFS= read -r __po_line || [[ -n $__po_line ]]; do
    __po_line=${__po_line#"${__po_line%%[![:space:]]*}"}
    __po_line=${__po_line%"${__po_line##*[![:space:]]}"}
    [[ -z $__po_line || $__po_line == '#'* ]] && continue
    if [[ $__po_line =~ ^(--[^=[:space:]]+)=(.*)$ ]] ||
       [[ $__po_line =~ ^(--[^[:space:]]+)[[:space:]]+(.*)$ ]]; then
      __po_cfg+=("${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
    else
      __po_die "bad line in config '$1': $__po_line"
    fi
  done < "$1"
}

__po_cfg=()
__po_cli=()
while (( $# > 0 )); do
  case $1 in
    --help|-h)
      if [[ -n ${help_message:-} ]]; then
        printf '%s\n' "$help_message" >&2
      else
        echo "No help found." >&2
      fi
      exit 0 ;;
    --)
      shift
      break ;;
    --config=*)
      __po_read_config "${1#--config=}"
      shift ;;
    --config)
      (( $# >= 2 )) || __po_die "option $1 requires a value"
      __po_read_config "$2"
      shift 2 ;;
    --*=*)
      __po_cli+=("${1%%=*}" "${1#*=}")
      shift ;;
    --*)
      (( $# >= 2 )) || __po_die "option $1 requires a value"
      __po_cli+=("$1" "$2")
      shift 2 ;;
    *)
      break ;;
  esac
done

__po_all=("${__po_cfg[@]}" "${__po_cli[@]}")
for (( __po_i = 0; __po_i < ${#__po_all[@]}; __po_i += 2 )); do
  __po_set "${__po_all[__po_i]}" "${__po_all[__po_i + 1]}"
done
unset -v __po_cfg __po_cli __po_all __po_i
unset -f __po_die __po_set __po_read_config
true
