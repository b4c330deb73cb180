"""The checkup as a list of small steps, in the order they print. Each step reads facts through
`Facts` (facts.py) and returns its row(s); none changes anything. The settings step runs first:
the others use its settings, with the default in place of each invalid value."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from scripts.checks.row import FAIL, Row
from scripts.doctor import api_key, disk, engine, gpu, model, network, settings_row
from scripts.doctor.facts import Facts
from scripts.doctor.host import Host
from scripts.stack import compose
from scripts.stack.env import EnvFile

Step = Callable[[Facts], "Row | list[Row] | None"]


def steps() -> list[tuple[str, Step]]:
    return [
        ("Docker engine", engine.docker),
        ("Compose plugin", engine.compose),
        ("BuildKit", engine.buildkit),
        ("NVIDIA runtime", engine.nvidia_runtime),
        ("nofile limit", engine.nofile),
        ("NVIDIA driver", gpu.driver),
        ("image track", gpu.image_track),
        ("GPU", gpu.gpu_rows),
        ("MAX_MODEL_LEN", model.max_len),
        ("TENSOR_PARALLEL_SIZE", model.tp_heads),
        ("disk", disk.disk),
        ("host port", network.host_port),
        ("model hub", network.hub),
        ("API key", api_key.api_key),
    ]


def guarded(name: str, step: Step, f: Facts) -> list[Row]:
    """Run one step; a bug in it becomes its own FAIL row instead of hiding the others."""
    try:
        out = step(f)
    except Exception as e:
        return [Row(name, FAIL, f"the check crashed: {type(e).__name__}: {e}",
                    "report it with the output of `python3 -m scripts.doctor`")]  # fmt: skip
    return out if isinstance(out, list) else [out] if out else []


def device_of(p: compose.Project, s_device: str) -> str:
    """cpu when the vllm service Compose resolved runs on CPU (COMPOSE_FILE with
    compose.cpu.yaml), or SERVE_DEVICE=cpu is set (how doctor is told about the CPU override)."""
    return "cpu" if "cpu" in (s_device, p.variables.get("SERVE_DEVICE")) else s_device


def collect(host: Host, environ: Mapping[str, str], env_file: Path) -> list[Row]:
    project = compose.ask(compose.Compose(env_file=env_file, environ=environ, run=host.run))
    try:
        file = EnvFile.scan(host.read_text(str(env_file)))
    except OSError:
        file = None  # no .env: the environment and the defaults
    s, bad, settings = settings_row.read(project, file)
    f = Facts(host, project, s, bad, device_of(project, s.device))
    rows = [settings]
    for name, step in steps():
        rows += guarded(name, step, f)
    return rows
