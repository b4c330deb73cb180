#!/usr/bin/env bash
# Fill ./wheelhouse with exactly the files of the track's lock (requirements/locks/TRACK.txt) and
# of the build's installer (requirements/locks/uv.txt), so the image build needs no network
# (compose.cpu.yaml builds with `network: none`):
#   docker/build-wheelhouse.sh cpu        (the GPU tracks work too: cu124, cu130)
# For each pin, the wheel that the lock's target (its "# python-version" and "# python-platform"
# lines: the base image's CPython and glibc) installs is fetched with `pip download --no-deps
# --require-hashes`, so every file matches the lock's sha256 hashes. Wheels are kept under
# ${QVS_CACHE:-$HOME/.cache/qwen3-vllm-stack}/wheels and shared by all tracks, so a second run
# downloads nothing; the wheelhouse gets one file per pin, hard-linked from that cache. Any host
# python3 with pip will do (the target is the lock's, not the host's).
set -Eeuo pipefail
step="start"
trap 'echo "build-wheelhouse.sh: failed during: $step (line $LINENO: $BASH_COMMAND)" >&2' ERR
t0=$SECONDS

track=${1:?usage: build-wheelhouse.sh TRACK (cpu, cu124 or cu130)}
root=$(cd "$(dirname "$0")/.." && pwd)
lock=$root/requirements/locks/$track.txt
out=$root/wheelhouse
base=${QVS_CACHE:-$HOME/.cache/qwen3-vllm-stack}/wheels
store=$base/files                     # every wheel ever fetched, shared by all tracks
export PIP_CACHE_DIR=$base/pip-http PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
python=${PYTHON:-python3}
lockfile=("$python" "$root/docker/lockfile.py")
[[ -f $lock ]] || { echo "build-wheelhouse.sh: no lock for track '$track' ($lock): use cpu," \
  "cu124 or cu130 (bash docker/lock.sh $track writes it)" >&2; exit 2; }
mkdir -p "$store" "$out"

# fetch LOCK NAME: the wheels of LOCK that its target installs, named in $base/chosen-NAME.txt
fetch() {
  local lock=$1 name=$2 pyver glibc target select rc=0 n
  step="reading the target of $lock"
  read -r pyver glibc < <("${lockfile[@]}" target "$lock")
  target=(--only-binary=:all: --python-version "$pyver" --implementation cp
          --abi "cp${pyver/./}" --abi abi3 --abi none)
  for ((v = ${glibc#2_}; v >= 5; v--)); do target+=(--platform "manylinux_2_${v}_x86_64"); done
  target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
           --platform manylinux1_x86_64 --platform any)

  step="matching $lock with $store"
  select=("${lockfile[@]}" select "$lock" "$store" --missing "$base/missing-$name.txt"
          --verified "$base/verified.json")
  "${select[@]}" >"$base/chosen-$name.txt" || rc=$?
  if ((rc == 3)); then
    n=$(wc -l <"$base/missing-$name.txt")
    step="downloading $n locked wheels of $lock (pip download --no-deps --require-hashes)"
    echo "build-wheelhouse.sh: $name: fetching $n of $(grep -c '^[A-Za-z0-9]' "$lock" || true) locked wheels"
    "$python" -m pip download -q --no-deps --require-hashes "${target[@]}" -d "$store" \
      -r "$base/missing-$name.txt"
    step="matching $lock with $store after the download"
    "${select[@]}" >"$base/chosen-$name.txt"
  elif ((rc != 0)); then
    exit "$rc"
  fi
}
fetch "$lock" "$track"
read -r pyver glibc < <("${lockfile[@]}" target "$lock")
# and the build's installer (uv), which docker/install-python.sh takes from the wheelhouse too
fetch "$root/requirements/locks/uv.txt" "uv-$track"
mapfile -t files < <(cat "$base/chosen-$track.txt" "$base/chosen-uv-$track.txt")

step="filling $out"
find "$out" -mindepth 1 -maxdepth 1 ! -name .keep -exec rm -rf {} +
for f in "${files[@]}"; do
  ln "$store/$f" "$out/$f" 2>/dev/null || cp "$store/$f" "$out/$f"
done
bytes=$(du -scbL "${files[@]/#/$out/}" | tail -n1 | cut -f1)
echo "build-wheelhouse.sh: $track: ${#files[@]} wheels ($((bytes / 1000000)) MB, CPython $pyver," \
  "glibc ${glibc/_/.}) in $out, $((SECONDS - t0))s"
