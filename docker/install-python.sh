#!/usr/bin/env bash
# Build-time install of the bundle's Python environment into /opt/venv, for one track (cu124,
# cu130 or cpu): exactly the track's lock, requirements/locks/TRACK.txt (docker/lock.sh writes
# it), with hash checking and no resolution (--no-deps: the lock is the whole environment), by
# uv, itself hash-checked from its own lock (requirements/locks/uv.txt, installed by pip into a
# scratch folder that goes away). With wheels in /wheelhouse, installs from there only (no
# network), after checking that it holds a wheel for every pin of both locks; otherwise from the
# index. Then `pip check`, the files requirements/prune-TRACK.txt names are deleted, and the
# bytecode is compiled (uv, on every core).
set -Eeuo pipefail
trap 'echo "install-python.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
track=${1:?usage: install-python.sh TRACK}
req=/tmp/requirements
lock=$req/locks/$track.txt
uv_lock=$req/locks/uv.txt
lockfile=/tmp/lockfile.py
if [[ ! -f $req/track-$track.txt || ! -f $lock ]]; then
  echo "install-python.sh: unknown track '$track' (no requirements/locks/$track.txt): use" \
    "$(find "$req" -maxdepth 1 -name 'track-*.txt' -printf '%f\n' | sed 's/^track-//; s/\.txt$//' | sort | paste -sd, -)" >&2
  exit 2
fi
python3 -m venv /opt/venv
py=/opt/venv/bin/python
want=$("$py" "$lockfile" target "$lock" | cut -d' ' -f1)
have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $have != "$want" ]]; then
  echo "install-python.sh: requirements/locks/$track.txt is for CPython $want, but this base image" \
    "has $have; build TRACK=$track on its own base image (BASE_IMAGE), or change the track's" \
    "Python in docker/lock.sh and run bash docker/lock.sh $track" >&2
  exit 2
fi
tool=$(mktemp -d /tmp/uv.XXXXXX)  # uv and its cache, on the venv's file system (hard links)
trap 'rm -rf "$tool"' EXIT
pip=("$py" -m pip install --quiet --no-cache-dir --disable-pip-version-check --no-deps
     --require-hashes --only-binary :all: --target "$tool/uv")
uv=("$tool/uv/bin/uv" pip install --python "$py" --no-deps --require-hashes --only-binary :all:
    --compile-bytecode --cache-dir "$tool/cache" --no-progress)
if compgen -G "/wheelhouse/*.whl" >/dev/null; then
  echo "installing from the local wheelhouse ($(find /wheelhouse -name "*.whl" | wc -l) wheels), no network"
  { "$py" "$lockfile" check "$lock" /wheelhouse \
      && "$py" "$lockfile" check "$uv_lock" /wheelhouse --track "$track"; } \
    || { echo "install-python.sh: the wheelhouse does not hold the $track lock" >&2; exit 1; }
  pip+=(--no-index --find-links /wheelhouse)
  uv+=(--offline --no-index --find-links /wheelhouse)
fi
"${pip[@]}" -r "$uv_lock"
UV_PYTHON_DOWNLOADS=never "${uv[@]}" -r "$lock"
"$py" "$lockfile" pip-check "$lock"
if [[ -f $req/prune-$track.txt ]]; then
  "$py" "$lockfile" prune "$req/prune-$track.txt" "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
fi
