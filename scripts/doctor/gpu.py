"""GPU steps: the NVIDIA driver against TRACK, the base image against TRACK, and GPU count,
memory and free memory on the GPUs the stack may use (NVIDIA_VISIBLE_DEVICES and
CUDA_VISIBLE_DEVICES honoured, as scripts/checks/container.py does in the container)."""

from __future__ import annotations

import re
from dataclasses import replace

from scripts.checks import gpus as gpu_checks
from scripts.checks.driver import TRACK_CUDA_MAJOR, check_driver
from scripts.checks.gpus import NO_GPU_FIX, Gpu, check_gpu_count
from scripts.checks.memory import check_gpu_free, check_gpu_memory
from scripts.checks.row import FAIL, OK, WARN, Row
from scripts.doctor.facts import Facts
from scripts.doctor.settings_row import carried
from scripts.stack.layout import largest_tp, whole_replicas
from scripts.stack.settings import TRACK_IMAGES

VISIBILITY = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
NOT_NEEDED = "not needed (the CPU override, compose.cpu.yaml)"


def driver(f: Facts) -> Row:
    if f.device == "cpu":
        return Row("NVIDIA driver", OK, NOT_NEEDED)
    gpus, why = f.gpus()
    if gpus is None:
        return Row("NVIDIA driver", FAIL, why, NO_GPU_FIX)
    return check_driver(f.s.track, gpus)


def image_track(f: Facts) -> Row | None:
    """BASE_IMAGE (the build argument Compose passes) against TRACK; no row when they agree."""
    if f.device == "cpu":
        return None
    image = f.compose.build_arg("vllm", "BASE_IMAGE") or f.compose.value("BASE_IMAGE")
    m = re.search(r"cuda:(\d+)\.", image)
    want = TRACK_CUDA_MAJOR.get(f.s.track)
    if m and want and int(m.group(1)) != want:
        right = TRACK_IMAGES[f.s.track]
        return Row(
            "image track", FAIL,
            f"BASE_IMAGE={image} is CUDA {m.group(1)}, TRACK={f.s.track} is CUDA {want}",
            f"BASE_IMAGE={right} in .env", {"BASE_IMAGE": right},
        )  # fmt: skip
    return None


def visible(f: Facts, gpus: list[Gpu]) -> tuple[list[Gpu], str]:
    """The GPUs the stack may use, and a note when *_VISIBLE_DEVICES leave out some."""
    env = f.compose.variables
    seen = gpu_checks.visible(gpus, env, VISIBILITY)
    if len(seen) == len(gpus):
        return seen, ""
    set_ = ", ".join(f"{n}={env[n]}" for n in VISIBILITY if env.get(n))
    return seen, f" ({set_}: {len(seen)} of the host's {len(gpus)} GPUs)"


def count_row(f: Facts, gpus: list[Gpu], note: str) -> Row:
    s = f.s
    row = check_gpu_count(s.tensor_parallel_size, gpus, s.gpu_count)
    bad = carried("GPU count", "GPU_COUNT", f.bad)
    if bad and row.status != FAIL:  # judged at one replica meanwhile
        tp = s.tensor_parallel_size
        fix = (
            f"GPU_COUNT={tp} in .env (one replica), or a multiple of TENSOR_PARALLEL_SIZE={tp} "
            f"up to {whole_replicas(len(gpus), tp)} (the GPUs visible)"
        )
        row = replace(bad, fix=fix, suggest={"GPU_COUNT": str(tp)})
    return replace(row, detail=row.detail + note)


def gpu_rows(f: Facts) -> list[Row]:
    """GPU count, GPU memory, GPU free memory, on the GPUs Compose would hand the container."""
    names = ("GPU count", "GPU memory", "GPU free memory")
    if f.device == "cpu":
        return [Row(n, OK, NOT_NEEDED) for n in names]
    every, why = f.gpus()
    if every is None:
        return [
            Row("GPU count", FAIL, f"no GPU visible ({why})", NO_GPU_FIX),
            Row("GPU memory", WARN, "not checked: no GPU information", "see NVIDIA driver"),
            Row("GPU free memory", WARN, "not checked: no GPU information", "see NVIDIA driver"),
        ]
    gpus, note = visible(f, every)
    s = f.s
    # the container sees the first GPU_COUNT GPUs; with too few, judge memory at the TP that fits
    tp = s.tensor_parallel_size
    if len(gpus) < tp:
        tp = largest_tp(len(gpus))
    shape = f.shape()
    memory = check_gpu_memory(s, gpus, shape, tp)
    if tp != s.tensor_parallel_size:
        memory = replace(memory, detail=f"{memory.detail} (at TENSOR_PARALLEL_SIZE={tp})")
    if f.stack_running():
        free = Row("GPU free memory", OK, "the stack is running and holds its GPU memory")
    else:
        free = check_gpu_free(replace(s, tensor_parallel_size=tp), gpus, shape)
    return [count_row(f, gpus, note), memory, free]
