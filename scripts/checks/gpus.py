"""GPUs as nvidia-smi reports them, the ones a process may use, and whether there are enough for
the layout (TENSOR_PARALLEL_SIZE x replicas). The only I/O is `query_gpus`, which runs nvidia-smi.
Standard library only (doctor runs on the host's plain python3)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scripts.checks.row import FAIL, OK, Row
from scripts.stack.layout import Layout, largest_tp, whole_replicas

NVIDIA_SMI = (
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.used,driver_version,uuid",
    "--format=csv,noheader,nounits",
)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_mib: int | None  # None where nvidia-smi says [N/A] (e.g. MIG mode)
    used_mib: int | None
    driver: str
    uuid: str = ""


def _mib(raw: str) -> int | None:
    raw = raw.strip()
    try:
        return int(float(raw))
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def parse_gpus(text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version[,uuid]
    --format=csv,noheader,nounits`, e.g. `0, NVIDIA H100 80GB HBM3, 81559, 0, 580.159.04, GPU-..`
    (recordings without the uuid column parse too). Raises ValueError on a line of another shape."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        uuid = parts.pop() if parts[-1].startswith(("GPU-", "MIG-")) else ""
        if len(parts) < 5 or not parts[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line: {line.strip()!r}")
        name = ", ".join(parts[1:-3])  # a name with a comma in it stays whole
        gpus.append(Gpu(int(parts[0]), name, _mib(parts[-3]), _mib(parts[-2]), parts[-1], uuid))
    return gpus


def visible(gpus: Sequence[Gpu], env: Mapping[str, str], names: Sequence[str]) -> list[Gpu]:
    """The GPUs a process may use, in its order: the first of `names` (CUDA_VISIBLE_DEVICES,
    NVIDIA_VISIBLE_DEVICES) that is set, as indexes or UUID prefixes; unset or `all`: every GPU.
    nvidia-smi lists every GPU of the host whatever those say, so a busy GPU 0 must not stop a
    server started on GPU 1."""
    for name in names:
        raw = env.get(name)
        if raw is None or raw.strip() in ("", "all"):
            continue
        chosen = []
        for item in (x.strip() for x in raw.split(",")):
            if item.isdigit():
                chosen += [g for g in gpus if g.index == int(item)]
            elif item.startswith(("GPU-", "MIG-")):
                chosen += [g for g in gpus if g.uuid and g.uuid.startswith(item)]
            else:  # "none", "void", "-1": CUDA stops at the first entry it cannot use
                break
        return chosen
    return list(gpus)


def query_gpus(timeout: float = 30) -> tuple[list[Gpu] | None, str]:
    """Run nvidia-smi. (gpus, "") on success; (None, why) when it is missing or fails."""
    try:
        r = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return None, "nvidia-smi not found"
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nvidia-smi did not run ({type(e).__name__})"
    if r.returncode != 0:
        why = (r.stdout + r.stderr).strip().splitlines()
        return None, f"nvidia-smi failed: {why[0] if why else f'exit {r.returncode}'}"
    try:
        return parse_gpus(r.stdout), ""
    except ValueError as e:
        return None, str(e)


NO_GPU_FIX = (
    "install the NVIDIA driver (>= 550.54.14), or run on CPU: `QVS_BASE_FROM=debian:bookworm-slim "
    "bash docker/build-base.sh` once (the CPU base image), then "
    "COMPOSE_FILE=compose.yaml:compose.cpu.yaml in .env"
)


def check_gpu_count(tp: int, gpus: Sequence[Gpu], gpu_count: int | None = None) -> Row:
    """Enough GPUs for GPU_COUNT (TENSOR_PARALLEL_SIZE x data-parallel replicas) among those
    visible: on the host, those Docker can reserve; in the container, those it was handed.
    gpu_count None: TENSOR_PARALLEL_SIZE alone."""
    n = len(gpus)
    need = tp if gpu_count is None else gpu_count
    if n == 0:
        return Row("GPU count", FAIL, "no NVIDIA GPU visible", NO_GPU_FIX)
    if n < tp:
        fit = largest_tp(n)
        return Row(
            "GPU count", FAIL,
            f"{n} GPU(s) visible, fewer than TENSOR_PARALLEL_SIZE={tp}",
            f"set TENSOR_PARALLEL_SIZE={fit} and GPU_COUNT={fit} in .env",
            {"TENSOR_PARALLEL_SIZE": str(fit), "GPU_COUNT": str(fit)},
        )  # fmt: skip
    if need > n:
        fit = whole_replicas(n, tp)
        return Row(
            "GPU count", FAIL,
            f"GPU_COUNT={need} but {n} GPU(s) visible: {Layout(need, tp).replicas} replica(s) of "
            f"TENSOR_PARALLEL_SIZE={tp} do not fit",
            f"set GPU_COUNT={fit} in .env", {"GPU_COUNT": str(fit)},
        )  # fmt: skip
    dp = Layout(need, tp).replicas
    return Row(
        "GPU count", OK,
        f"{n} GPU(s) visible; GPU_COUNT={need}: {dp} replica(s) x TENSOR_PARALLEL_SIZE={tp}",
    )  # fmt: skip
