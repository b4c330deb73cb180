"""Disk step: free space where Docker keeps its volumes, against the weights and caches."""

from __future__ import annotations

from scripts.checks.row import FAIL, OK, WARN, Row
from scripts.doctor.facts import Facts
from scripts.stack import profiles
from scripts.stack.model import CACHES_GB


def disk(f: Facts) -> Row:
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
    fmt = profiles.PROFILES[f.s.profile].weights
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
