#!/usr/bin/env bash
# Build a GPU track's image on a machine with no GPU and no registry, through the real Dockerfile
# with the build's network off, and check what is inside it:
#   bash docker/build-gpu-standin.sh cu130      -> qwen3-vllm-stack:cu130-standin
#   bash docker/build-gpu-standin.sh cu124      -> qwen3-vllm-stack:cu124-standin
#   bash docker/build-gpu-standin.sh cu130 --checks-only   step 4 on the image built before
# 1. the base: docker/build-base.sh TRACK, the Ubuntu release of the track's nvidia/cuda base with
#    what the Dockerfile would apt-get on it (the CUDA libraries come from the lock's wheels)
# 2. the wheels: docker/build-wheelhouse.sh TRACK (exactly the lock's files)
# 3. docker build --network none with BuildKit (docker/build-image.sh finds the client), then
#    BuildKit's copy of the build context (the wheelhouse) is dropped from its cache
#    (QVS_KEEP_BUILD_CACHE=1 keeps it for a faster rebuild)
# 4. in the image, offline: the imports `vllm serve` does before it needs a GPU, `pip check`, the
#    pruned libraries named nowhere, every profile's argument list parsed by the image's own vLLM
#    (tests/check_vllm_args.py, told it is on the CPU platform), then the sizes.
# Needs root (debootstrap), a Docker engine and about 3x the image size of free disk while it runs.
set -Eeuo pipefail
step="start"
trap 'echo "build-gpu-standin.sh: failed during: $step (line $LINENO: $BASH_COMMAND)" >&2' ERR
t0=$SECONDS
track=${1:?usage: build-gpu-standin.sh TRACK (cu124 or cu130) [--checks-only]}
checks_only=""
if [[ ${2:-} == --checks-only ]]; then checks_only=1; fi
[[ $track == cu124 || $track == cu130 ]] \
  || { echo "build-gpu-standin.sh: unknown GPU track '$track': use cu124 or cu130" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
base=${QVS_STANDIN_BASE:-qwen3-vllm-stack/cuda-standin:$track}
image=${QVS_STANDIN_IMAGE:-qwen3-vllm-stack:$track-standin}
logdir=${TMPDIR:-/tmp}/qvs-standin-$track
mkdir -p "$logdir"
lap() { printf '[%s] %s: %ds\n' "$track" "$1" $((SECONDS - ${2:-$t0})); }

build() {
  step="the stand-in base (docker/build-base.sh $track)"
  t=$SECONDS
  QVS_BASE_IMAGE=$base bash docker/build-base.sh "$track" | tail -n 2
  lap "base" "$t"

  step="the wheelhouse (docker/build-wheelhouse.sh $track)"
  t=$SECONDS
  bash docker/build-wheelhouse.sh "$track" | tail -n 1
  lap "wheelhouse" "$t"

  step="docker build --network none, BuildKit (log: $logdir/build.log)"
  t=$SECONDS
  bash docker/build-image.sh --progress plain --network none --build-arg "BASE_IMAGE=$base" \
    --build-arg "TRACK=$track" -t "$image" . >"$logdir/build.log" 2>&1 \
    || { tail -n 25 "$logdir/build.log" >&2; false; }
  sed -E 's/^#[0-9]+ [0-9.]+ //' "$logdir/build.log" \
    | grep -E "^(installing from|Installed [0-9]|pip check|pruned [0-9]|/wheelhouse: |vllm [0-9]|build-image.sh: )" || true
  lap "docker build" "$t"
  if [[ -z ${QVS_KEEP_BUILD_CACHE:-} ]]; then
    docker builder prune -f --filter type=source.local 2>/dev/null | tail -n 1 | sed 's/^/BuildKit cache of the build context: /'
  fi
}
[[ -n $checks_only ]] || build

step="checks inside $image"
t=$SECONDS
run=(docker run --rm --network none -v "$root/tests:/opt/stack/tests:ro"
     -v "$root/docker:/opt/qvs/docker:ro" -v "$root/requirements:/opt/qvs/requirements:ro" "$image")
# what `vllm serve` imports before it needs a GPU, and the parsers the bundle asks for
"${run[@]}" python /opt/qvs/docker/image_checks.py 2>&1 | grep -E "^(imports: |import .* FAILED)"
"${run[@]}" python /opt/qvs/docker/lockfile.py pip-check "/opt/qvs/requirements/locks/$track.txt"
if [[ -f requirements/prune-$track.txt ]]; then
  # the pruned libraries: still gone, and named by no file but their RECORD and pathfinder's catalog
  # shellcheck disable=SC2016  # expanded in the image
  "${run[@]}" bash -c '
    site=$(python -c "import sysconfig; print(sysconfig.get_paths()[\"purelib\"])")
    bad=0
    while read -r glob _; do
      [[ -z $glob || $glob == \#* ]] && continue
      name=${glob##*/}; name=${name%%.so*}.so
      if compgen -G "$site/$glob" >/dev/null; then echo "pruned file back: $glob"; bad=1; fi
      refs=$(grep -rlaF "$name" "$site" | grep -vE "\.dist-info/RECORD$|/cuda/pathfinder/" || true)
      if [[ -n $refs ]]; then echo "$name is named by: $refs"; bad=1; else echo "pruned $name: named by nothing left"; fi
    done < "/opt/qvs/requirements/prune-$1.txt"
    exit $bad' _ "$track"
fi
"${run[@]}" python -m tests.check_vllm_args | tail -n 1
lap "checks" "$t"

step="sizes"
size=$(docker image inspect -f '{{.Size}}' "$image")
base_size=$(docker image inspect -f '{{.Size}}' "$base")
echo "image $image: $((size / 1000000)) MB uncompressed (docker image inspect; base $base:" \
  "$((base_size / 1000000)) MB)"
echo "layers over 1 MB (docker history):"
docker history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$image" | awk -F'\t' '$1 ~ /(MB|GB)$/' \
  | sed -E 's/\/bin\/bash -o pipefail -c (#\(nop\) )?//; s/dir:[0-9a-f]+ /dir /' | cut -c1-100 | sed 's/^/  /'
echo "largest in site-packages (MB):"
# shellcheck disable=SC2016  # expanded in the image
"${run[@]}" bash -c 'cd "$(python -c "import sysconfig; print(sysconfig.get_paths()[\"purelib\"])")" \
  && du -sm -- * | sort -rn | head -n 12 | awk "{printf \"  %6d %-28s\", \$1, \$2} NR % 3 == 0 {print \"\"}"'
lap "all" "$t0"
