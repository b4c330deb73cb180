#!/usr/bin/env bash
# Prepare a GPU host for the stack and run it at boot. For VM images that already carry the
# NVIDIA driver: Ubuntu 22.04 / 24.04 (the major clouds' GPU images), Debian 12.
#   sudo deploy/host/bootstrap.sh                   every step below, in order
#   sudo deploy/host/bootstrap.sh check secrets     only these steps
# Steps (each one checks first and skips what is already done, so a re-run changes nothing):
#   check    root, the OS, the bundle, the API key
#   docker   Docker Engine + Compose plugin from Docker's apt repository (signing key pinned)
#   toolkit  NVIDIA Container Toolkit from NVIDIA's apt repository (signing key pinned)
#   runtime  `nvidia-ctk runtime configure --runtime=docker`, Docker restarted only on a change
#   secrets  $QVS_ETC/secrets: the API key, Grafana's password, tls/ (written once, never replaced)
#   image    `docker compose build vllm` (the image for TRACK)
#   service  deploy/systemd/qwen3-vllm-stack.service installed, enabled and (re)started
#   doctor   `python3 -m scripts.doctor`: the host checked against the settings (reports only)
# Settings (environment):
#   QVS_API_KEY       the API key clients send; written to $QVS_ETC/secrets/api_key when that
#                     file does not exist yet (cloud-init writes the file itself instead)
#   DOCKER_APT_URL    Docker's repository or a mirror (https://download.docker.com/linux)
#   NVIDIA_APT_URL    NVIDIA's repository or a mirror (https://nvidia.github.io/libnvidia-container)
# The stack's own settings are read from $QVS_ETC/stack.env (.env.example lists them).
set -Eeuo pipefail
step="start"
trap 'echo "bootstrap.sh: step \"$step\" failed at line $LINENO: $BASH_COMMAND" >&2' ERR

here=$(cd "$(dirname "$0")/../.." && pwd)
QVS_ETC=/etc/qwen3-vllm-stack            # the unit reads the same paths
QVS_DIR=/opt/qwen3-vllm-stack            # the unit's WorkingDirectory
UNIT=qwen3-vllm-stack.service
DOCKER_APT_URL=${DOCKER_APT_URL:-https://download.docker.com/linux}
NVIDIA_APT_URL=${NVIDIA_APT_URL:-https://nvidia.github.io/libnvidia-container}
DOCKER_KEY_FPR=9DC858229FC7DD38854AE2D88D81803C0EBFCD88   # Docker Release (CE deb)
NVIDIA_KEY_FPR=C95B321B61E88C1809C4F759DDCAE044F796ECB0   # NVIDIA CORPORATION (Open Source Projects)
PLACEHOLDER=CHANGE-ME
ALL_STEPS=(check docker toolkit runtime secrets image service doctor)

say() { printf 'bootstrap.sh: %s: %s\n' "$step" "$*"; }
die() { printf 'bootstrap.sh: %s: %s\n' "$step" "$*" >&2; exit 1; }
skip() { say "$* already, skipped"; }
systemd_up() { [[ -d /run/systemd/system ]]; }
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; }

# the stack's settings as the unit sees them: its Environment= lines, then stack.env read as
# systemd reads an EnvironmentFile (NAME=value, the value may hold spaces, optional quotes)
stack_env() {
  export COMPOSE_PROJECT_NAME=qwen3-vllm-stack API_KEY_FILE=$QVS_ETC/secrets/api_key \
    GRAFANA_ADMIN_PASSWORD_FILE=$QVS_ETC/secrets/grafana_admin_password TLS_DIR=$QVS_ETC/secrets/tls
  [[ -f $QVS_ETC/stack.env ]] || return 0
  local line name value
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] \
      || die "$QVS_ETC/stack.env: '$line' is not NAME=value"
    name=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
    export "$name=$value"
  done < "$QVS_ETC/stack.env"
}

version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

# apt_repo NAME KEY_URL FINGERPRINT LINE: the signing key (checked against the pinned fingerprint)
# and the source list, each rewritten only when it differs; 0 when something changed
apt_repo() {
  local name=$1 key_url=$2 fpr=$3 line=$4 keyring=/etc/apt/keyrings/$1.gpg tmp got changed=1
  tmp=$(mktemp -d)
  if ! curl -fsSL --retry 3 "$key_url" -o "$tmp/key"; then
    rm -rf "$tmp"
    die "cannot download $key_url: check the network, or point ${5} at a mirror"
  fi
  got=$(gpg --show-keys --with-colons "$tmp/key" 2>/dev/null | awk -F: '$1 == "fpr" {print $10; exit}')
  if [[ $got != "$fpr" ]]; then
    rm -rf "$tmp"
    die "the key at $key_url has fingerprint '${got:-none}', not $fpr: refusing it"
  fi
  gpg --dearmor < "$tmp/key" > "$tmp/key.gpg"
  install -d -m 0755 /etc/apt/keyrings
  if ! cmp -s "$tmp/key.gpg" "$keyring"; then install -m 0644 "$tmp/key.gpg" "$keyring"; changed=0; fi
  line=${line/@KEYRING@/$keyring}
  if [[ $(cat "/etc/apt/sources.list.d/$name.list" 2>/dev/null) != "$line" ]]; then
    printf '%s\n' "$line" > "/etc/apt/sources.list.d/$name.list"
    changed=0
  fi
  rm -rf "$tmp"
  return $changed
}

step_check() {
  [[ $(id -u) == 0 ]] || die "run as root: sudo $0 ${*}"
  # shellcheck source=/dev/null
  . /etc/os-release
  case "${ID:-}-${VERSION_ID:-}" in
    ubuntu-22.04|ubuntu-24.04|debian-12) say "$PRETTY_NAME" ;;
    *) die "unsupported OS '${PRETTY_NAME:-unknown}': use an Ubuntu 22.04 or 24.04 (or Debian 12) image" ;;
  esac
  [[ -f $here/compose.yaml && -f $here/scripts/init_secrets.py ]] \
    || die "$here is not the bundle (no compose.yaml): run the bootstrap.sh inside the bundle"
  command -v python3 >/dev/null || die "python3 is missing: apt-get install python3"
  local key=$QVS_ETC/secrets/api_key
  if [[ -s $key ]]; then
    grep -q "$PLACEHOLDER" "$key" && die "$key still holds the placeholder $PLACEHOLDER: put your API key there (cloud-init: the write_files entry for it)"
    say "API key file $key present"
  elif [[ -n ${QVS_API_KEY:-} ]]; then
    [[ $QVS_API_KEY != *"$PLACEHOLDER"* ]] || die "QVS_API_KEY is still the placeholder $PLACEHOLDER: set your API key"
    [[ ${#QVS_API_KEY} -ge 16 && $QVS_API_KEY != *[[:space:]]* ]] \
      || die "QVS_API_KEY must be at least 16 characters with no spaces (e.g. \`openssl rand -hex 24\`)"
    say "API key from QVS_API_KEY"
  else
    die "no API key: set QVS_API_KEY (SkyPilot: --secret QVS_API_KEY=...) or write $key (cloud-init: write_files)"
  fi
}

step_docker() {
  local have="" want
  # the oldest Compose the files work with, declared once in scripts/stack/compose.py
  want=$(cd "$here" && python3 -c 'from scripts.stack.compose import MIN_SHOWN; print(MIN_SHOWN)')
  if command -v docker >/dev/null; then
    have=$(docker compose version --short 2>/dev/null | sed 's/^v//' || true)
    if [[ -n $have ]] && version_ge "$have" "$want"; then
      skip "Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?') with Compose $have installed"
      return
    fi
  fi
  # shellcheck source=/dev/null
  . /etc/os-release
  apt_install ca-certificates curl gnupg
  apt_repo docker "$DOCKER_APT_URL/$ID/gpg" "$DOCKER_KEY_FPR" \
    "deb [arch=$(dpkg --print-architecture) signed-by=@KEYRING@] $DOCKER_APT_URL/$ID $VERSION_CODENAME stable" \
    DOCKER_APT_URL || true
  apt-get update -qq
  if command -v docker >/dev/null; then   # another Docker (e.g. Ubuntu's docker.io): add Compose only
    apt_install docker-compose-plugin
  else
    apt_install docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
  fi
  if systemd_up; then systemctl enable --now docker; fi
  say "installed Docker with Compose $(docker compose version --short)"
}

step_toolkit() {
  if command -v nvidia-ctk >/dev/null; then
    skip "NVIDIA Container Toolkit $(nvidia-ctk --version 2>/dev/null | head -n1 | awk '{print $NF}') installed"
    return
  fi
  apt_install ca-certificates curl gnupg
  apt_repo nvidia-container-toolkit "$NVIDIA_APT_URL/gpgkey" "$NVIDIA_KEY_FPR" \
    "deb [signed-by=@KEYRING@] $NVIDIA_APT_URL/stable/deb/\$(ARCH) /" NVIDIA_APT_URL || true
  apt-get update -qq
  apt_install nvidia-container-toolkit
  say "installed $(nvidia-ctk --version | head -n1)"
}

step_runtime() {
  if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"'; then
    skip "Docker's nvidia runtime configured"
    return
  fi
  command -v nvidia-ctk >/dev/null || die "nvidia-ctk is missing: run the toolkit step first"
  nvidia-ctk runtime configure --runtime=docker
  if systemd_up; then systemctl restart docker; fi
  say "configured Docker's nvidia runtime (/etc/docker/daemon.json) and restarted Docker"
}

step_secrets() {
  install -d -m 0700 "$QVS_ETC/secrets"
  local key=$QVS_ETC/secrets/api_key
  if [[ ! -s $key && -n ${QVS_API_KEY:-} ]]; then
    printf '%s\n' "$QVS_API_KEY" > "$key"
    say "wrote the API key from QVS_API_KEY to $key"
  fi
  [[ -f $QVS_ETC/stack.env ]] || printf '# the stack'"'"'s settings, NAME=value (see .env.example)\n' > "$QVS_ETC/stack.env"
  stack_env
  (cd "$here" && python3 -m scripts.init_secrets)   # the rest; nothing is overwritten
  chmod 0644 "$API_KEY_FILE" "$GRAFANA_ADMIN_PASSWORD_FILE"   # read by the containers' uid
}

step_image() {
  stack_env
  say "building the image (the first time about 10 minutes: vLLM and its CUDA libraries)"
  (cd "$here" && docker compose build vllm)
}

step_service() {
  [[ $here == "$(readlink -f "$QVS_DIR")" ]] \
    || die "the unit runs the bundle from $QVS_DIR, this one is in $here: move it there (or link it)"
  local unit=/etc/systemd/system/$UNIT changed=0
  if cmp -s "$here/deploy/systemd/$UNIT" "$unit"; then
    skip "$unit up to date"
  else
    install -m 0644 "$here/deploy/systemd/$UNIT" "$unit"
    changed=1
    say "installed $unit"
  fi
  if ! systemd_up; then
    systemctl enable "$UNIT"
    say "systemd is not running here (a container or an image build): enabled for the next boot"
    return
  fi
  systemctl daemon-reload
  systemctl enable "$UNIT"
  if ((changed)) || ! systemctl is-active --quiet "$UNIT"; then
    systemctl restart "$UNIT"
    say "started $UNIT: journalctl -u $UNIT -f shows the stack's logs"
  else
    skip "$UNIT running"
  fi
}

step_doctor() {
  stack_env
  if (cd "$here" && python3 -m scripts.doctor); then
    say "no problems found"
  else
    say "doctor found problems (the table above names the fix for each); the stack may not start"
  fi
}

steps=("$@")
((${#steps[@]})) || steps=("${ALL_STEPS[@]}")
for s in "${steps[@]}"; do
  [[ " ${ALL_STEPS[*]} " == *" $s "* ]] || { echo "bootstrap.sh: unknown step '$s' (steps: ${ALL_STEPS[*]})" >&2; exit 2; }
done
for step in "${steps[@]}"; do
  "step_$step"
done
step="done"
say "${steps[*]}"
