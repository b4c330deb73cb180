"""Engine steps: the Docker engine, the Compose plugin, the NVIDIA container runtime, and the
engine's open-files limit for containers (measured by scripts/engine_limits.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from scripts import engine_limits
from scripts.checks.row import FAIL, OK, WARN, Row
from scripts.doctor.facts import Facts
from scripts.stack.compose import INSTALL, INSTALL_DOCKER, MIN_SHOWN, MIN_VERSION, parse_version

DOCKER_MIN = 23
INSTALL_TOOLKIT = (
    "install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker "
    "&& sudo systemctl restart docker` (https://docs.nvidia.com/datacenter/cloud-native/"
    "container-toolkit/latest/install-guide.html)"
)


def _engine_fix(err: str) -> str:
    if "permission denied" in err.lower():
        return (
            "add yourself to the docker group: `sudo usermod -aG docker $USER`, then log in again"
        )
    return "start the engine: `sudo systemctl start docker`"


def docker(f: Facts) -> Row:
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
    v = parse_version(raw)
    if v is None:
        return Row(name, WARN, f"engine version {raw!r} not understood", "")
    if v[0] < DOCKER_MIN:
        return Row(
            name, WARN, f"engine {raw} is older than {DOCKER_MIN} (out of support)",
            f"upgrade Docker Engine to {DOCKER_MIN} or newer: https://docs.docker.com/engine/install/",
        )  # fmt: skip
    return Row(name, OK, f"engine {raw}")


def compose(f: Facts) -> Row:
    """The plugin's version, from the answer the settings step already got."""
    name = "Compose plugin"
    if f.host.which("docker") is None:
        return Row(name, FAIL, "no docker command", INSTALL)
    rc, out, err = f.compose.version
    v = parse_version(out) if rc == 0 else None
    if v is None:
        why = (err or out).strip().splitlines()
        return Row(name, FAIL, f"`docker compose` missing ({why[0] if why else rc})", INSTALL)
    shown = out.strip()
    if v < MIN_VERSION:
        return Row(
            name, FAIL,
            f"{shown} is older than {MIN_SHOWN} (compose files use depends_on.required and !reset)",
            INSTALL,
        )  # fmt: skip
    return Row(name, OK, f"{shown} (>= {MIN_SHOWN})")


BUILDX_MIN = (0, 17)  # Compose v5 builds with `docker buildx bake`, which needs buildx 0.17+
INSTALL_BUILDX = (
    "install the buildx plugin >= 0.17 (`sudo apt-get install docker-buildx-plugin` from Docker's "
    "apt repository), or build with `bash docker/build-image.sh --compose vllm` (it also finds "
    "the BuildKit of a Docker CLI older than 23) and then `docker compose up`"
)


def buildkit(f: Facts) -> Row:
    """Can `docker compose up --build` build the Dockerfile? Its install step mounts the
    wheelhouse (RUN --mount), which only BuildKit does; without buildx Compose falls back to the
    classic builder, which refuses it."""
    name = "BuildKit"
    if f.host.which("docker") is None:
        return Row(name, FAIL, "no docker command", INSTALL_BUILDX)
    rc, out, err = f.host.run(["docker", "buildx", "version"])
    m = re.search(r"\bv?(\d+)\.(\d+)\.\d+", out) if rc == 0 else None
    if m is None:
        return Row(
            name, FAIL,
            "no buildx plugin: `docker compose build` falls back to the classic builder, which "
            "cannot build the Dockerfile (its RUN --mount needs BuildKit)", INSTALL_BUILDX,
        )  # fmt: skip
    version = (int(m.group(1)), int(m.group(2)))
    shown = m.group(0).lstrip("v")
    if version < BUILDX_MIN:
        return Row(name, FAIL, f"buildx {shown} is older than 0.17, which Compose builds with",
                   INSTALL_BUILDX)  # fmt: skip
    return Row(name, OK, f"buildx {shown}: `docker compose build` uses BuildKit")


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


def nvidia_runtime(f: Facts) -> Row:
    name = "NVIDIA runtime"
    if f.device == "cpu":
        return Row(name, OK, "not needed (the CPU override, compose.cpu.yaml)")
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


def nofile(f: Facts) -> Row:
    """The engine's open-files limit for containers (scripts/engine_limits.py measures it)."""
    if not f.engine_up():
        return Row(engine_limits.NAME, WARN, "not checked: the Docker engine did not answer",
                   "see Docker engine")  # fmt: skip
    status, detail, fix = engine_limits.check(f.host.run, engine_limits.stack_images(f.s.track))
    return Row(engine_limits.NAME, status, detail, fix)
