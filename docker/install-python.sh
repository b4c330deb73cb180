#!/usr/bin/env bash
# Build-time install of the bundle's Python environment into /opt/venv, for one track (cu124,
# cu130 or cpu): exactly the track's lock, requirements/locks/TRACK.txt (docker/lock.sh writes
# it), with pip's hash checking and no resolution (--no-deps: the lock is the whole environment).
# With wheels in /wheelhouse, installs from there only (no network), after checking that it holds
# a wheel for every pin; otherwise from the index. Then `pip check`, and the files
# requirements/prune-TRACK.txt names are deleted.
set -Eeuo pipefail
trap 'echo "install-python.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
track=${1:?usage: install-python.sh TRACK}
req=/tmp/requirements
lock=$req/locks/$track.txt
lockfile=/tmp/lockfile.py
if [[ ! -f $lock ]]; then
  echo "install-python.sh: unknown track '$track' (no requirements/locks/$track.txt): use" \
    "$(find "$req/locks" -name '*.txt' -printf '%f\n' | sed 's/\.txt$//' | sort | paste -sd, -)" >&2
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
pip=("$py" -m pip install --no-cache-dir --disable-pip-version-check --no-deps --require-hashes
     --only-binary :all:)
if compgen -G "/wheelhouse/*.whl" >/dev/null; then
  echo "installing from the local wheelhouse ($(find /wheelhouse -name "*.whl" | wc -l) wheels), no network"
  "$py" "$lockfile" check "$lock" /wheelhouse || { echo "install-python.sh: the wheelhouse does" \
    "not hold the $track lock" >&2; exit 1; }
  pip+=(--no-index --find-links /wheelhouse)
fi
"${pip[@]}" -r "$lock"
"$py" "$lockfile" pip-check "$lock"
if [[ -f $req/prune-$track.txt ]]; then
  "$py" "$lockfile" prune "$req/prune-$track.txt" "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
fi
"$py" -m compileall -q -j 0 /opt/venv >/dev/null || true
