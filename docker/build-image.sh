#!/usr/bin/env bash
# Build an image with BuildKit, which the Dockerfile needs (its install step mounts the wheelhouse
# from the build context), with whichever BuildKit client this host has:
#   1. the buildx plugin (Docker 23+ and Docker Desktop have it): `docker buildx build --load`, and
#      with --compose and buildx 0.17+ `docker compose build` itself (Compose v5 builds with Bake)
#   2. else a Docker CLI older than 23.0, whose BuildKit client is built in (DOCKER_BUILDKIT=1):
#      the one on PATH or /usr/bin/docker of Debian's and Ubuntu's docker.io package, which ships
#      the engine (the test machine: engine 20.10 with that client, a Docker 28 CLI on PATH and no
#      buildx; Compose v5 and the new CLI then only have the classic builder)
# Usage:
#   docker/build-image.sh [DOCKER BUILD ARGS...] CONTEXT      e.g. --network none -t IMAGE .
#   docker/build-image.sh --compose [COMPOSE ARGS...] SERVICE
#       SERVICE's image as `docker compose [COMPOSE ARGS] build SERVICE` builds it: with client 2,
#       from the service's build section in `docker compose config` (context, dockerfile, args,
#       network, target; the image name is the tag), e.g.
#       docker/build-image.sh --compose -f compose.yaml -f compose.cpu.yaml vllm
# The last line says what was built with which client and how long it took.
set -Eeuo pipefail
step="start"
trap 'echo "build-image.sh: failed during: $step (line $LINENO: $BASH_COMMAND)" >&2' ERR
t0=$SECONDS

buildx=$(docker buildx version 2>/dev/null | awk '{sub(/^v/, "", $2); print $2}' || true)
client=()
if [[ -n $buildx ]]; then
  client=(docker buildx build --load)
  how="docker buildx $buildx"
else
  for c in $(type -ap docker) /usr/bin/docker; do
    v=$("$c" version --format '{{.Client.Version}}' 2>/dev/null) || continue
    if [[ $v =~ ^[0-9]+\. ]] && ((${v%%.*} < 23)); then
      client=(env DOCKER_BUILDKIT=1 "$c" build)
      how="$c $v (its built-in BuildKit)"
      break
    fi
  done
fi
if ((${#client[@]} == 0)); then
  echo "build-image.sh: no BuildKit client here: the Dockerfile needs BuildKit, and this Docker" \
    "CLI has no buildx plugin; install it (Docker's docker-buildx-plugin package, or Debian's" \
    "docker-buildx) and run this again" >&2
  exit 2
fi

# a service of `docker compose config --format json` (stdin) -> docker build arguments, NUL-separated
read -r -d '' to_build_args <<'PY' || true
import json, sys
service = sys.argv[1]
svc = json.load(sys.stdin)["services"][service]
build = svc.get("build")
if not build:
    sys.exit(f"build-image.sh: service {service} has no build section")
known = {"context", "dockerfile", "args", "network", "target"}
if set(build) - known:
    sys.exit(f"build-image.sh: {service}: build keys {sorted(set(build) - known)} are not handled "
             f"here (only {sorted(known)}); build it with docker compose and buildx 0.17+")
out = ["-f", f"{build['context']}/{build.get('dockerfile', 'Dockerfile')}"]
for k, v in (build.get("args") or {}).items():
    out += ["--build-arg", f"{k}={v}"]
if build.get("network"):
    out += ["--network", build["network"]]
if build.get("target"):
    out += ["--target", build["target"]]
if svc.get("image"):
    out += ["-t", svc["image"]]
sys.stdout.write("\0".join([*out, build["context"]]) + "\0")
PY

if [[ ${1:-} == --compose ]]; then
  shift
  (($#)) || { echo "usage: build-image.sh --compose [COMPOSE ARGS...] SERVICE" >&2; exit 2; }
  service=${!#}
  compose=(docker compose "${@:1:$#-1}")
  if [[ -n $buildx ]] && [[ $(printf '%s\n' 0.17 "$buildx" | sort -V | head -n1) == 0.17 ]]; then
    step="${compose[*]} build $service"
    "${compose[@]}" build "$service"
    echo "build-image.sh: $service built by docker compose with docker buildx $buildx in $((SECONDS - t0))s"
    exit 0
  fi
  step="reading $service's build section (${compose[*]} config)"
  config=$("${compose[@]}" config --format json "$service")
  spec=$(mktemp)
  trap 'rm -f "$spec"' EXIT
  python3 -c "$to_build_args" "$service" <<<"$config" >"$spec"
  mapfile -d '' -t args <"$spec"
  set -- "${args[@]}"
fi

step="${client[*]} $*"
echo "build-image.sh: building with $how"
"${client[@]}" "$@"
tag=""
prev=""
for a in "$@"; do [[ $prev != -t && $prev != --tag ]] || tag=$a; prev=$a; done
echo "build-image.sh: ${tag:-the image} built with $how in $((SECONDS - t0))s"
