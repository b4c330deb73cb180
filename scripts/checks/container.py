"""The checks serve runs in the container before it execs vLLM, on the GPUs the container sees:
the driver against the image's CUDA, the GPU count, memory and free memory."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from scripts.checks.driver import check_driver, track_from_cuda_version
from scripts.checks.gpus import Gpu, check_gpu_count, query_gpus, visible
from scripts.checks.memory import check_gpu_free, check_gpu_memory
from scripts.checks.row import FAIL, WARN, Row
from scripts.stack.model import folder_quant, model_shape
from scripts.stack.settings import Settings


def container_rows(
    s: Settings,
    env: Mapping[str, str],
    gpus: Sequence[Gpu],
    config_text: str | None = None,
) -> list[Row]:
    """The checks serve runs before exec'ing vLLM, on the GPUs the container sees. The track
    comes from the image's CUDA_VERSION (compose does not pass TRACK to the container). The
    model folder's config.json, when given, gives the shape of an unknown model and the group
    or block size of a quantized checkpoint."""
    track = track_from_cuda_version(env.get("CUDA_VERSION", ""), s.track)
    shape = model_shape(s, config_text)
    quant = folder_quant(config_text)
    gpus = visible(gpus, env, ("CUDA_VISIBLE_DEVICES",))  # the runtime applied NVIDIA_VISIBLE_..
    return [
        check_driver(track, gpus),
        check_gpu_count(s.tensor_parallel_size, gpus, s.gpu_count),
        check_gpu_memory(s, gpus, shape, quant=quant),
        check_gpu_free(s, gpus, shape, quant),
    ]


def read_config(model_path: Path) -> str | None:
    try:
        return (model_path / "config.json").read_text()
    except OSError:
        return None


def container_check(
    s: Settings,
    env: Mapping[str, str],
    say: Callable[[str], None],
    query: Callable[[], tuple[list[Gpu] | None, str]] = query_gpus,
) -> bool:
    """Run the container checks and print them through `say`; False when one FAILs."""
    gpus, why = query()
    if gpus is None:
        say(f"serve: preflight: warning: {why}; GPU checks skipped (vLLM will report)")
        return True
    config = read_config(s.model_path)
    ok = True
    for row in container_rows(s, env, gpus, config):
        if row.status == FAIL:
            ok = False
            say(f"serve: preflight: {row.detail}; fix: {row.fix}")
        elif row.status == WARN:
            say(f"serve: preflight: warning: {row.detail}")
    if not ok:
        say("serve: preflight: set PREFLIGHT=0 to start vLLM anyway")
    return ok
