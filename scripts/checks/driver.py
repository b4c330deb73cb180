"""The NVIDIA driver against the image track."""

from __future__ import annotations

from collections.abc import Sequence

from scripts.checks.gpus import NO_GPU_FIX, Gpu
from scripts.checks.row import FAIL, OK, WARN, Row
from scripts.stack.settings import TRACK_IMAGES

# NVIDIA's numbers (CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver Versions",
# https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/ ; and "Minor Version Compatibility",
# https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html):
#   - CUDA 12.4 GA ships with and asks for Linux driver >= 550.54.14 (cuda_12.4.0_550.54.14).
#   - CUDA 12.x runs on any driver >= 525 through minor-version compatibility, with a limited
#     feature set (no PTX JIT of code newer than the driver; the table's upper bound is < 580,
#     newer drivers work through plain backward compatibility).
#   - CUDA 13.x needs driver >= 580 (13.0 GA ships 580.65.06); there is no minor-version
#     compatibility below 580.
# The cu124 track also runs torch's CUDA 12.8 wheels, which rely on the same 12.x rule.
CU124_DRIVER = (550, 54, 14)
CUDA12_FLOOR = 525
CU130_DRIVER = 580
TRACK_CUDA_MAJOR = {"cu124": 12, "cu130": 13}


def parse_version(raw: str) -> tuple[int, ...]:
    """'580.159.04' -> (580, 159, 4); ValueError when it is not dotted numbers."""
    parts = raw.strip().split(".")
    if not raw.strip() or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a version: {raw!r}")
    return tuple(int(p) for p in parts)


def cu124_switch() -> dict[str, str]:
    return {"TRACK": "cu124", "BASE_IMAGE": TRACK_IMAGES["cu124"]}


def driver_ok(track: str, version: str) -> Row:
    """Is this NVIDIA driver new enough for the image track?"""
    try:
        v = parse_version(version)
    except ValueError:
        return Row("NVIDIA driver", WARN, f"cannot read the driver version {version!r}", "")
    where = f"driver {version}"
    if track == "cu130":
        if v[0] >= CU130_DRIVER:
            return Row("NVIDIA driver", OK, f"{where} >= 580: fine for TRACK=cu130 (CUDA 13.0)")
        if v >= CU124_DRIVER:
            return Row(
                "NVIDIA driver", FAIL,
                f"{where} is older than 580, which TRACK=cu130 (CUDA 13.0, vLLM 0.26.0) needs",
                "use the CUDA 12.4 track: TRACK=cu124 and BASE_IMAGE=" + TRACK_IMAGES["cu124"]
                + " in .env, or update the NVIDIA driver to 580 or newer",
                cu124_switch(),
            )  # fmt: skip
        return Row(
            "NVIDIA driver", FAIL,
            f"{where} is older than 580, which TRACK=cu130 (CUDA 13.0) needs",
            "update the NVIDIA driver to 580 or newer (or to >= 550.54.14 and use TRACK=cu124)",
        )  # fmt: skip
    # cu124
    if v >= CU124_DRIVER:
        note = ""
        if v[0] >= CU130_DRIVER:
            note = "; TRACK=cu130 (vLLM 0.26.0) would also run on it"
        return Row(
            "NVIDIA driver", OK, f"{where} >= 550.54.14: fine for TRACK=cu124 (CUDA 12.4){note}"
        )
    if v[0] >= CUDA12_FLOOR:
        return Row(
            "NVIDIA driver", WARN,
            f"{where} is older than 550.54.14 (CUDA 12.4): it runs the cu124 image only through "
            "CUDA minor-version compatibility (>= 525, limited: no PTX JIT of newer kernels)",
            "update the NVIDIA driver to 550.54.14 or newer (550, 570 or 580 branch)",
        )  # fmt: skip
    return Row(
        "NVIDIA driver", FAIL,
        f"{where} is older than 525, the oldest that runs CUDA 12 (TRACK=cu124 wants 550.54.14+)",
        "update the NVIDIA driver to 550.54.14 or newer (580+ also allows TRACK=cu130)",
    )  # fmt: skip


def check_driver(track: str, gpus: Sequence[Gpu]) -> Row:
    drivers = sorted({g.driver for g in gpus})
    if not drivers:
        return Row("NVIDIA driver", FAIL, "no NVIDIA GPU listed by nvidia-smi", NO_GPU_FIX)
    return driver_ok(track, drivers[0])


def track_from_cuda_version(cuda_version: str, default: str) -> str:
    """The track of an image from its CUDA_VERSION (the nvidia/cuda base images set it)."""
    try:
        major = parse_version(cuda_version)[0]
    except ValueError:
        return default
    for track, m in TRACK_CUDA_MAJOR.items():
        if m == major:
            return track
    return default
