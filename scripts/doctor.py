"""Host preflight: run before `docker compose up` to learn, in one table, what would stop the stack
on this machine and the exact fix for each problem.

    python3 -m scripts.doctor            # from the repo root, with the host's plain python3
    python3 -m scripts.doctor --json     # the rows as JSON

Reads the settings as compose does (the process environment overrides `.env` in the repo root),
validates them with scripts/settings.py, then checks the Docker engine, the Compose plugin, the
NVIDIA container runtime, the driver against TRACK, GPUs against TENSOR_PARALLEL_SIZE/GPU_COUNT,
GPU memory against the model, disk space where Docker keeps its volumes, the host port, the model
hub, and the API key file. Exit status: 0 without FAIL rows, 1 with any, 2 on a usage error.

Every fact about the machine comes through `Host` (tests pass a recorded one). To tell whether the
`models` volume is complete, doctor reads `<MODEL_ID>/.qvs-complete.json` under the volume's
Mountpoint when it can (root, or a rootless engine); otherwise, only when the volume exists and
the stack's image is already local, it reads the file through a throw-away container of that
image (`docker run --rm --pull never --network none`: no pull, no network, about a second). It
never builds or pulls anything.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from scripts import preflight, vllm_args
from scripts.preflight import FAIL, OK, WARN, Gpu, Row
from scripts.settings import FIELDS, Settings, SettingsError, load, read_keys

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "qwen3-vllm-stack"  # compose.yaml's `name:`
# The settings compose.yaml passes to the containers (its x-settings block, read from the file;
# this list when it cannot be read), plus TRACK (a build argument the driver check needs) and
# PREFLIGHT.
COMPOSE_SETTINGS = (
    "MODEL_ID", "MODEL_REVISION", "MODEL_SOURCE", "SERVED_MODEL_NAME", "MAX_MODEL_LEN",
    "GPU_MEMORY_UTILIZATION", "TENSOR_PARALLEL_SIZE", "REASONING_PARSER", "TOOL_CALL_PARSER",
    "SERVE_PROFILE", "SERVE_DEVICE", "SERVE_EXTRA_ARGS", "LOAD_FORMAT",
)  # fmt: skip
EXTRA_SETTINGS = ("TRACK", "PREFLIGHT")
DOCKER_MIN = 23
COMPOSE_MIN = (2, 24, 4)  # depends_on.required and the !reset tag (compose.cpu.yaml)
CACHES_GB = 2.0  # torch.compile, Triton and FlashInfer caches on the `cache` volume
HUBS = {"modelscope": ("MODELSCOPE_ENDPOINT", "https://www.modelscope.cn"),
        "huggingface": ("HF_ENDPOINT", "https://huggingface.co")}  # fmt: skip
INSTALL_DOCKER = "install Docker Engine: https://docs.docker.com/engine/install/"
INSTALL_COMPOSE = (
    "install the Compose plugin >= 2.24.4: `sudo apt-get install docker-compose-plugin` (Docker's "
    "apt repository) or put the docker-compose binary from "
    "https://github.com/docker/compose/releases into ~/.docker/cli-plugins/"
)
INSTALL_TOOLKIT = (
    "install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker "
    "&& sudo systemctl restart docker` (https://docs.nvidia.com/datacenter/cloud-native/"
    "container-toolkit/latest/install-guide.html)"
)


# --- .env -------------------------------------------------------------------------------------


class EnvFileError(ValueError):
    pass


_KEY = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=(.*)")
_VAR = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads .env: comments, `export`, 'single' (literal) and "double"
    quotes (escapes), ` #` comments after unquoted values, ${VAR} / ${VAR:-default}
    interpolation from the environment and earlier lines. Raises EnvFileError naming the line."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}

    def expand(value: str) -> str:
        def sub(m: re.Match) -> str:
            name = m.group(1) or m.group(4)
            got = environ.get(name, out.get(name))
            op, default = m.group(2), m.group(3) or ""
            if op in (":-", ":?") and not got or op in ("-", "?") and got is None:
                return default if op.endswith("-") else ""
            return got or ""

        return _VAR.sub(sub, value)

    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _KEY.fullmatch(line)
        if not m:
            raise EnvFileError(f"line {n}: expected KEY=VALUE, got {raw.strip()!r}")
        key, rest = m.group(1), m.group(2).strip()
        if rest[:1] == "'":
            end = rest.find("'", 1)
            if end < 0:
                raise EnvFileError(f"line {n}: {key}: the ' quote is not closed")
            value = rest[1:end]
        elif rest[:1] == '"':
            chars, i = [], 1
            while i < len(rest) and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < len(rest):
                    i += 1
                    chars.append(_ESCAPES.get(rest[i], "\\" + rest[i]))
                else:
                    chars.append(rest[i])
                i += 1
            if i >= len(rest):
                raise EnvFileError(f'line {n}: {key}: the " quote is not closed')
            value = expand("".join(chars))
        else:
            value = expand(re.split(r"\s+#", rest, maxsplit=1)[0].strip())
        out[key] = value
    return out


def compose_env(environ: Mapping[str, str], env_file: Path) -> tuple[dict[str, str], str]:
    """.env overridden by the process environment, as compose resolves ${VAR}. Returns the
    merged variables and a problem with the file ("" when none)."""
    try:
        text = env_file.read_text()
    except FileNotFoundError:
        return dict(environ), ""
    except OSError as e:
        return dict(environ), f"{env_file}: cannot read it ({e.strerror})"
    try:
        return {**parse_env_file(text, environ), **environ}, ""
    except EnvFileError as e:
        return dict(environ), f"{env_file}: {e}"


def compose_settings(compose_file: Path = ROOT / "compose.yaml") -> tuple[str, ...]:
    """The `KEY: ${KEY...}` entries of compose.yaml's x-settings block (COMPOSE_SETTINGS when
    the file cannot be read)."""
    try:
        text = compose_file.read_text()
    except OSError:
        return COMPOSE_SETTINGS
    block = text.partition("x-settings: &settings")[2].split("\n\n", 1)[0]
    keys = tuple(re.findall(r"^\s+([A-Z][A-Z0-9_]*): \$\{\1\b", block, re.M))
    return keys or COMPOSE_SETTINGS


def container_env(merged: Mapping[str, str]) -> dict[str, str]:
    """What compose hands scripts/settings.py inside the containers (MODELS_DIR is fixed)."""
    env = {k: merged[k] for k in compose_settings() + EXTRA_SETTINGS if k in merged}
    env["MODELS_DIR"] = "/models"
    return env


def load_settings(env: Mapping[str, str]) -> tuple[Settings, Row]:
    """Settings, and the settings row. On errors the other checks go on with the defaults in
    place of the bad values, so one typo does not hide every other problem."""
    try:
        return load(env), Row("settings", OK, "valid (scripts/settings.py)")
    except SettingsError as e:
        message = str(e)
    bad = set()
    for name, _attr, parse in FIELDS:
        raw = env.get(name, "").strip()
        if raw:
            try:
                parse(raw)  # type: ignore[operator]
            except ValueError:
                bad.add(name)
    rest = {k: v for k, v in env.items() if k not in bad}
    try:
        s = load(rest)
    except SettingsError:
        s = Settings()
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() != "invalid settings:"]
    detail = "; ".join(lines)
    return s, Row("settings", FAIL, detail, "correct the values named in .env (see .env.example)")


# --- host facts -------------------------------------------------------------------------------


class Host:
    """Every fact doctor reads about this machine. Tests pass a subclass fed with recordings."""

    def run(self, argv: Sequence[str], timeout: float = 30) -> tuple[int, str, str]:
        """(exit status, stdout, stderr); 127 when the program is missing, 124 on timeout."""
        try:
            r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found"
        except subprocess.TimeoutExpired:
            return 124, "", f"{argv[0]}: no answer within {timeout:.0f}s"
        except OSError as e:
            return 126, "", f"{argv[0]}: {e.strerror}"
        return r.returncode, r.stdout, r.stderr

    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def disk_free(self, path: str) -> int:
        return shutil.disk_usage(path).free

    def read_text(self, path: str) -> str:
        return Path(path).read_text()

    def list_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def port_free(self, addr: str, port: int) -> tuple[bool, str]:
        """Try to bind addr:port as Docker would; (False, reason) when that fails."""
        try:
            infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            return False, f"cannot resolve {addr} ({e.strerror})"
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return False, "in use"
                return False, e.strerror or str(e)
        return True, ""

    def port_owner(self, port: int) -> str | None:
        """The program listening on a TCP port, from /proc (None when not visible to us)."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{f[9]}]")
        if not inodes:
            return None
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    return f"{comm} (pid {pid})"
            except OSError:
                continue
        return None

    def http_ok(self, url: str, timeout: float = 5) -> tuple[bool, str]:
        """Does anything answer HTTP at url? Any status counts; (False, why) otherwise."""
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "qvs-doctor"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return True, f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            return True, f"HTTP {e.code}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            return False, f"{type(reason).__name__}: {reason}"


class Facts:
    """Host facts parsed once (docker info, GPUs, containers, the models volume)."""

    def __init__(self, host: Host, merged: Mapping[str, str], s: Settings):
        self.host, self.merged, self.s = host, merged, s
        self.project = merged.get("COMPOSE_PROJECT_NAME") or PROJECT
        self._cache: dict[str, object] = {}

    def _once(self, key: str, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def docker_json(self, what: str) -> tuple[dict | None, str]:
        """`docker version|info --format '{{json .}}'`: (parsed, error)."""

        def get():
            rc, out, err = self.host.run(["docker", what, "--format", "{{json .}}"])
            try:
                data = json.loads(out) if out.strip() else None
            except ValueError:
                data = None
            if rc != 0 or not isinstance(data, dict):
                return data if isinstance(data, dict) else None, (err or out).strip() or f"rc {rc}"
            return data, ""

        return self._once("docker " + what, get)

    def engine_up(self) -> bool:
        info, err = self.docker_json("info")
        return bool(info) and not err

    def gpus(self) -> tuple[list[Gpu] | None, str]:
        def get():
            rc, out, err = self.host.run(list(preflight.NVIDIA_SMI))
            if rc == 127:
                return None, "nvidia-smi not found: no NVIDIA driver on this host"
            if rc != 0:
                first = (err or out).strip().splitlines()
                return None, "nvidia-smi failed: " + (first[0] if first else f"exit {rc}")
            try:
                return preflight.parse_gpus(out), ""
            except ValueError as e:
                return None, str(e)

        return self._once("gpus", get)

    def containers(self) -> list[dict]:
        """Running containers (`docker ps`), each with its labels parsed."""

        def get():
            rc, out, _ = self.host.run(["docker", "ps", "--format", "{{json .}}"])
            rows = []
            for line in out.splitlines() if rc == 0 else []:
                try:
                    c = json.loads(line)
                except ValueError:
                    continue
                labels = dict(
                    kv.split("=", 1) for kv in (c.get("Labels") or "").split(",") if "=" in kv
                )
                c["labels"] = labels
                rows.append(c)
            return rows

        return self._once("ps", get)

    def stack_running(self) -> bool:
        return any(
            c["labels"].get("com.docker.compose.project") == self.project
            and c["labels"].get("com.docker.compose.service") == "vllm"
            for c in self.containers()
        )

    def volume_file(self, rel: str) -> tuple[str | None, str]:
        """A file of the `models` volume: (text, "") or (None, why)."""

        def get():
            vol = f"{self.project}_models"
            rc, out, _ = self.host.run(
                ["docker", "volume", "inspect", vol, "--format", "{{json .}}"]
            )
            if rc != 0:
                return None, f"no volume {vol}"
            try:
                mount = json.loads(out)["Mountpoint"]
            except (ValueError, KeyError, TypeError):
                return None, f"cannot read `docker volume inspect {vol}`"
            try:
                return self.host.read_text(f"{mount}/{rel}"), ""
            except FileNotFoundError:
                return None, f"{rel} is not in the volume"
            except OSError:
                pass  # not readable as this user: ask a throw-away container of the local image
            for tag in (self.s.track, "cpu"):
                image = f"{self.project}:{tag}"
                if self.host.run(["docker", "image", "inspect", image, "--format", "{{.Id}}"])[0]:
                    continue
                rc, out, err = self.host.run(
                    ["docker", "run", "--rm", "--pull", "never", "--network", "none",
                     "--entrypoint", "cat", "-v", f"{vol}:/m:ro", image, f"/m/{rel}"],
                    timeout=60,
                )  # fmt: skip
                if rc == 0:
                    return out, ""
                return None, f"{rel} is not readable in the volume ({err.strip()[:80]})"
            return None, f"volume {vol} is not readable by this user (run doctor with sudo)"

        return self._once("volume:" + rel, get)

    def volume_complete(self) -> tuple[bool, str]:
        text, why = self.volume_file(f"{self.s.checkpoint_id}/.qvs-complete.json")
        if text is None:
            return False, why
        try:
            files = json.loads(text)["files"]
        except (ValueError, KeyError, TypeError):
            return False, ".qvs-complete.json is unreadable"
        return bool(files), f"{len(files)} verified files"

    def shape(self) -> preflight.ModelShape | None:
        known = preflight.model_shape(self.s)
        if known is not None:
            return known
        text, _ = self.volume_file(f"{self.s.checkpoint_id}/config.json")
        return preflight.model_shape(self.s, text)


# --- the checks -------------------------------------------------------------------------------


def _version(raw: str) -> tuple[int, ...] | None:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", raw.strip())
    return tuple(int(g or 0) for g in m.groups()) if m else None


def _engine_fix(err: str) -> str:
    if "permission denied" in err.lower():
        return (
            "add yourself to the docker group: `sudo usermod -aG docker $USER`, then log in again"
        )
    return "start the engine: `sudo systemctl start docker`"


def check_docker(f: Facts) -> Row:
    name = "Docker engine"
    if f.host.which("docker") is None:
        return Row(name, FAIL, "the docker command is not installed", INSTALL_DOCKER)
    version, err = f.docker_json("version")
    server = (version or {}).get("Server") or {}
    if err or not server.get("Version"):
        info, ierr = f.docker_json("info")
        if not info or ierr or not info.get("ServerVersion"):
            why = (ierr or err).splitlines()[0] if (ierr or err) else "no answer"
            return Row(name, FAIL, f"engine unreachable: {why}", _engine_fix(ierr or err))
        raw = info["ServerVersion"]
    else:
        raw = server["Version"]
    v = _version(raw)
    if v is None:
        return Row(name, WARN, f"engine version {raw!r} not understood", "")
    if v[0] < DOCKER_MIN:
        return Row(
            name, WARN, f"engine {raw} is older than {DOCKER_MIN} (out of support)",
            f"upgrade Docker Engine to {DOCKER_MIN} or newer: https://docs.docker.com/engine/install/",
        )  # fmt: skip
    return Row(name, OK, f"engine {raw}")


def check_compose(f: Facts) -> Row:
    name = "Compose plugin"
    if f.host.which("docker") is None:
        return Row(name, FAIL, "no docker command", INSTALL_COMPOSE)
    rc, out, err = f.host.run(["docker", "compose", "version", "--short"])
    v = _version(out) if rc == 0 else None
    if v is None:
        why = (err or out).strip().splitlines()
        return Row(
            name, FAIL, f"`docker compose` missing ({why[0] if why else rc})", INSTALL_COMPOSE
        )
    shown = out.strip()
    if v < COMPOSE_MIN:
        return Row(
            name, FAIL,
            f"{shown} is older than 2.24.4 (compose files use depends_on.required and !reset)",
            INSTALL_COMPOSE,
        )  # fmt: skip
    return Row(name, OK, f"{shown} (>= 2.24.4)")


def _cdi_nvidia(f: Facts, dirs: Sequence[str]) -> str | None:
    for d in dirs:
        try:
            names = f.host.list_dir(d)
        except OSError:
            continue
        for n in names:
            if n.endswith((".json", ".yaml", ".yml")):
                try:
                    text = f.host.read_text(f"{d}/{n}")
                except OSError:
                    continue
                if "nvidia.com/gpu" in text:
                    return f"{d}/{n}"
    return None


def check_runtime(f: Facts, device: str) -> Row:
    name = "NVIDIA runtime"
    if device == "cpu":
        return Row(name, OK, "not needed (SERVE_DEVICE=cpu; run with -f compose.cpu.yaml)")
    if not f.engine_up():
        return Row(name, WARN, "not checked: the Docker engine did not answer", "see Docker engine")
    info, _ = f.docker_json("info")
    runtimes = sorted((info or {}).get("Runtimes") or {})
    if "nvidia" in runtimes:
        return Row(name, OK, "the nvidia runtime is registered with Docker")
    spec = _cdi_nvidia(f, (info or {}).get("CDISpecDirs") or [])  # null: CDI is off
    if spec:
        return Row(name, OK, f"CDI spec for NVIDIA GPUs: {spec}")
    hook = f.host.which("nvidia-container-runtime-hook")
    if hook:  # Docker registers its `nvidia` device driver when this hook is on its PATH
        return Row(name, OK, f"{hook} present (Docker's nvidia device driver)")
    return Row(
        name, FAIL,
        f"Docker has no NVIDIA runtime (runtimes: {', '.join(runtimes) or 'none'}; no CDI spec): "
        "compose's GPU reservation fails with `could not select device driver \"nvidia\"`",
        INSTALL_TOOLKIT,
    )  # fmt: skip


def check_driver(f: Facts, s: Settings, device: str) -> Row:
    if device == "cpu":
        return Row("NVIDIA driver", OK, "not needed (SERVE_DEVICE=cpu)")
    gpus, why = f.gpus()
    if gpus is None:
        return Row("NVIDIA driver", FAIL, why, preflight._NO_GPU_FIX)
    return preflight.check_driver(s.track, gpus)


def check_base_image(merged: Mapping[str, str], s: Settings) -> Row | None:
    image = merged.get("BASE_IMAGE") or preflight.TRACK_IMAGES["cu124"]
    m = re.search(r"cuda:(\d+)\.", image)
    want = preflight.TRACK_CUDA_MAJOR.get(s.track)
    if m and want and int(m.group(1)) != want:
        right = preflight.TRACK_IMAGES[s.track]
        return Row(
            "image track", FAIL,
            f"BASE_IMAGE={image} is CUDA {m.group(1)}, TRACK={s.track} is CUDA {want}",
            f"BASE_IMAGE={right} in .env", {"BASE_IMAGE": right},
        )  # fmt: skip
    return None


def _gpu_count(merged: Mapping[str, str], n: int) -> tuple[int | None, str]:
    raw = (merged.get("GPU_COUNT") or "1").strip()
    if raw == "all":
        return n, ""
    if raw.isdigit() and int(raw) >= 1:
        return int(raw), ""
    return None, f"GPU_COUNT={raw!r} must be a whole number >= 1 or `all`"


def gpu_rows(f: Facts, s: Settings, device: str) -> list[Row]:
    """GPU count, GPU memory, GPU free memory, on the GPUs compose would hand the container."""
    names = ("GPU count", "GPU memory", "GPU free memory")
    if device == "cpu":
        return [Row(n, OK, "not needed (SERVE_DEVICE=cpu)") for n in names]
    gpus, why = f.gpus()
    if gpus is None:
        return [
            Row("GPU count", FAIL, f"no GPU visible ({why})", preflight._NO_GPU_FIX),
            Row("GPU memory", WARN, "not checked: no GPU information", "see NVIDIA driver"),
            Row("GPU free memory", WARN, "not checked: no GPU information", "see NVIDIA driver"),
        ]
    count, problem = _gpu_count(f.merged, len(gpus))
    if problem:
        count_row = Row("GPU count", FAIL, problem, "GPU_COUNT=1 in .env", {"GPU_COUNT": "1"})
    else:
        count_row = preflight.check_gpu_count(s.tensor_parallel_size, gpus, count)
    # the container sees GPUs 0..GPU_COUNT-1; with too few, judge memory at the TP that fits
    tp = s.tensor_parallel_size
    if len(gpus) < tp:
        tp = preflight.largest_tp(len(gpus))
    shape = f.shape()
    memory = preflight.check_gpu_memory(s, gpus, shape, tp)
    if tp != s.tensor_parallel_size:
        memory = replace(memory, detail=f"{memory.detail} (at TENSOR_PARALLEL_SIZE={tp})")
    if f.stack_running():
        free = Row("GPU free memory", OK, "the stack is running and holds its GPU memory")
    else:
        free = preflight.check_gpu_free(replace(s, tensor_parallel_size=tp), gpus, shape)
    return [count_row, memory, free]


def check_disk(f: Facts) -> Row:
    name = "disk"
    info, _ = f.docker_json("info")
    root = (info or {}).get("DockerRootDir") or "/var/lib/docker"
    try:
        free, where = f.host.disk_free(root), root
    except OSError:
        try:
            free, where = f.host.disk_free("/"), "/ (Docker's data root is not readable)"
        except OSError as e:
            return Row(name, WARN, f"cannot read the free space of {root} ({e})", "")
    complete, _ = f.volume_complete() if f.engine_up() else (False, "")
    shape = f.shape()  # the download's size: the weights of the checkpoint SERVE_PROFILE serves
    fmt = vllm_args.PROFILES[f.s.profile].weights
    weights = shape.weight_bytes(fmt) / 1e9 if shape is not None else None
    if complete:
        need, what = CACHES_GB, f"{CACHES_GB:.0f} GB of compile caches (the model is downloaded)"
    elif weights is None:
        return Row(name, WARN, f"{free / 1e9:.1f} GB free on {where}; unknown model size", "")
    else:
        need = weights * 1.1 + CACHES_GB
        what = f"{need:.1f} GB ({weights:.1f} GB weights + 10% + {CACHES_GB:.0f} GB caches)"
    if free < need * 1e9:
        short = need - free / 1e9
        return Row(
            name, FAIL, f"{free / 1e9:.1f} GB free on {where}, the stack needs {what}",
            f"free {short:.1f} GB there (e.g. `docker system prune`), or move Docker's data-root "
            '("data-root" in /etc/docker/daemon.json) to a larger disk',
        )  # fmt: skip
    return Row(name, OK, f"{free / 1e9:.1f} GB free on {where}; needs {what}")


def _publishers(f: Facts, port: int) -> list[dict]:
    pat = re.compile(rf"(?:^|[,\s])[^,\s]*:{port}->")
    return [c for c in f.containers() if pat.search(c.get("Ports") or "")]


def check_port(f: Facts) -> Row:
    name = "host port"
    addr = (f.merged.get("BIND_ADDRESS") or "127.0.0.1").strip()
    raw = (f.merged.get("HOST_PORT") or "8000").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        return Row(name, FAIL, f"HOST_PORT={raw!r} is not a port", "HOST_PORT=8000 in .env",
                   {"HOST_PORT": "8000"})  # fmt: skip
    port = int(raw)
    free, why = f.host.port_free(addr, port)
    if free:
        return Row(name, OK, f"{addr}:{port} is free")
    if why != "in use":
        return Row(
            name, FAIL, f"cannot bind {addr}:{port}: {why}",
            "BIND_ADDRESS=127.0.0.1 in .env (or an address of this host)",
            {"BIND_ADDRESS": "127.0.0.1"},
        )  # fmt: skip
    owners = _publishers(f, port)
    for c in owners:
        if c["labels"].get("com.docker.compose.project") == f.project:
            return Row(name, OK, f"{addr}:{port} is in use by this stack ({c.get('Names')})")
    if owners:
        c = owners[0]
        project = c["labels"].get("com.docker.compose.project")
        by = f"container {c.get('Names')}" + (f" (project {project})" if project else "")
    else:
        by = f.host.port_owner(port) or "another process"
    alt = next(
        (p for p in range(port + 1, min(port + 200, 65536)) if f.host.port_free(addr, p)[0]),
        None,
    )
    fix = f"set HOST_PORT={alt} in .env, or stop {by}" if alt else f"stop {by}"
    return Row(
        name, FAIL, f"port {port} is in use by {by}", fix, {"HOST_PORT": str(alt)} if alt else {}
    )


def check_hub(f: Facts) -> Row:
    name = "model hub"
    source = f.s.model_source
    var, default = HUBS[source]
    url = (f.merged.get(var) or "").strip() or default
    ok, why = f.host.http_ok(url)
    if ok:
        return Row(name, OK, f"{source}: {url} answers ({why})")
    complete, what = f.volume_complete() if f.engine_up() else (False, "")
    if complete:
        return Row(name, OK, f"offline: {url} unreachable ({why}), but the volume is complete "
                   f"({what})")  # fmt: skip
    other = "huggingface" if source == "modelscope" else "modelscope"
    mirror = f"{var}=<mirror URL>"
    return Row(
        name, FAIL,
        f"{source}: {url} unreachable ({why}) and the models volume has no complete download",
        f"check the network or proxy (HTTPS_PROXY), set {mirror}, or MODEL_SOURCE={other} in .env",
    )  # fmt: skip


def check_api_key(f: Facts) -> Row:
    raw = f.merged.get("API_KEY_FILE") or "./secrets/api_key"
    path = Path(raw) if Path(raw).is_absolute() else ROOT / raw
    try:
        keys = read_keys(f.host.read_text(str(path)))
    except OSError:
        keys = []
    if keys:
        return Row("API key", OK, f"{raw} holds {len(keys)} key(s)")
    return Row(
        "API key", FAIL, f"{raw} is missing or has no key (compose reads the secret from it)",
        "python3 -m scripts.init_secrets",
    )  # fmt: skip


def device_of(merged: Mapping[str, str], s: Settings) -> str:
    """cpu with SERVE_DEVICE=cpu or when COMPOSE_FILE brings in the CPU override."""
    if "compose.cpu.yaml" in (merged.get("COMPOSE_FILE") or ""):
        return "cpu"
    return s.device


def guarded(name: str, check, *args) -> list[Row]:
    """Run one check; a bug in it becomes its own FAIL row instead of hiding the others."""
    try:
        out = check(*args)
    except Exception as e:
        return [Row(name, FAIL, f"the check crashed: {type(e).__name__}: {e}",
                    "report it with the output of `python3 -m scripts.doctor`")]  # fmt: skip
    return out if isinstance(out, list) else [out] if out else []


def collect(host: Host, environ: Mapping[str, str], env_file: Path) -> list[Row]:
    merged, env_problem = compose_env(environ, env_file)
    s, settings_row = load_settings(container_env(merged))
    if env_problem:
        settings_row = Row("settings", FAIL, env_problem, "fix that line of .env (KEY=VALUE)")
    f = Facts(host, merged, s)
    device = device_of(merged, s)
    try:
        shape = f.shape()
    except Exception:  # the GPU and disk rows report the crash, if it is one
        shape = None
    checks = [
        ("Docker engine", check_docker, f),
        ("Compose plugin", check_compose, f),
        ("NVIDIA runtime", check_runtime, f, device),
        ("NVIDIA driver", check_driver, f, s, device),
        ("image track", lambda: check_base_image(merged, s) if device == "cuda" else None),
        ("GPU", gpu_rows, f, s, device),
        ("MAX_MODEL_LEN", preflight.check_max_len, s, shape),
        ("TENSOR_PARALLEL_SIZE", preflight.check_tp_heads, s, shape),
        ("disk", check_disk, f),
        ("host port", check_port, f),
        ("model hub", check_hub, f),
        ("API key", check_api_key, f),
    ]
    rows = [settings_row]
    for name, check, *args in checks:
        rows += guarded(name, check, *args)
    return [_bad_setting(r, settings_row) for r in rows]


RANGE_FIXES = {
    "MAX_MODEL_LEN": "MAX_MODEL_LEN between 256 and 40960 in .env, e.g. MAX_MODEL_LEN=8192",
    "TENSOR_PARALLEL_SIZE": "TENSOR_PARALLEL_SIZE=1, 2, 4 or 8 in .env (and GPU_COUNT to match)",
}


def _bad_setting(row: Row, settings_row: Row) -> Row:
    """The MAX_MODEL_LEN and TENSOR_PARALLEL_SIZE rows carry their own invalid value (the other
    checks ran with the default in its place)."""
    if row.check not in RANGE_FIXES or settings_row.status != FAIL:
        return row
    for problem in settings_row.detail.split("; "):
        if problem.startswith(row.check + "="):
            return Row(row.check, FAIL, problem, RANGE_FIXES[row.check])
    return row


# --- output -----------------------------------------------------------------------------------


def table(rows: Sequence[Row], width: int = 120) -> str:
    heads = ("CHECK", "STATUS", "DETAIL", "FIX")
    w0 = max(len(heads[0]), *(len(r.check) for r in rows))
    w1 = 6
    rest = max(50, width - w0 - w1 - 6)
    w2 = rest * 11 // 20
    w3 = rest - w2
    lines = [f"{heads[0]:<{w0}}  {heads[1]:<{w1}}  {heads[2]:<{w2}}  {heads[3]}"]
    lines.append(f"{'-' * w0}  {'-' * w1}  {'-' * w2}  {'-' * w3}")
    for r in rows:
        detail = textwrap.wrap(r.detail, w2, break_long_words=False, break_on_hyphens=False) or [""]
        fix = (
            textwrap.wrap(r.fix, w3, break_long_words=False, break_on_hyphens=False)
            if r.status != OK
            else []
        )
        for i in range(max(len(detail), len(fix))):
            c0, c1 = (r.check, r.status) if i == 0 else ("", "")
            d = detail[i] if i < len(detail) else ""
            x = fix[i] if i < len(fix) else ""
            lines.append(f"{c0:<{w0}}  {c1:<{w1}}  {d:<{w2}}  {x}".rstrip())
    return "\n".join(lines)


def suggestions(rows: Sequence[Row]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in rows:
        if r.status == FAIL:
            out.update(r.suggest)
    return out


def summary(rows: Sequence[Row]) -> str:
    n = {st: sum(r.status == st for r in rows) for st in (OK, WARN, FAIL)}
    counts = f"{n[OK]} OK, {n[WARN]} WARN, {n[FAIL]} FAIL"
    if n[FAIL]:
        return f"doctor: {counts}: fix the FAIL rows before `docker compose up`"
    return f"doctor: {counts}: ready for `docker compose up --build`"


def main(argv: list[str] | None = None, host: Host | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m scripts.doctor",
        description="Check this host for the qwen3-vllm-stack before `docker compose up`.",
    )
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--env-file", type=Path, default=ROOT / ".env", help="default: ./.env")
    opts = ap.parse_args(argv)
    try:
        rows = collect(host or Host(), os.environ, opts.env_file)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug in a check must still give a row, never a traceback
        rows = [Row("doctor", FAIL, f"internal error: {type(e).__name__}: {e}",
                    "report it with the output of `python3 -m scripts.doctor`")]  # fmt: skip
    fail = any(r.status == FAIL for r in rows)
    env = suggestions(rows)
    if opts.json:
        doc = {
            "rows": [asdict(r) for r in rows],
            "suggested_env": env,
            "summary": summary(rows),
            "exit": int(fail),
        }
        print(json.dumps(doc, indent=1, ensure_ascii=False))
        return int(fail)
    print(table(rows, shutil.get_terminal_size((120, 24)).columns))
    if env:
        print("\nSuggested .env (set these lines in .env):")
        print("\n".join(f"{k}={v}" for k, v in env.items()))
    print("\n" + summary(rows))
    return int(fail)


if __name__ == "__main__":
    sys.exit(main())
