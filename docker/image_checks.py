"""Inside a built image, with no GPU: import what `vllm serve` imports before it needs a GPU, and
look up the parsers the bundle asks for (docker/build-gpu-standin.sh runs this).

Module-level imports of a package the lock leaves out (requirements/overrides-TRACK.txt) fail
here. Not covered: vLLM's compiled kernels (vllm._C*, FlashAttention) link libcuda.so.1, which
only the NVIDIA driver provides at run time, and whatever is imported lazily on a GPU.
    python /opt/qvs/docker/image_checks.py
"""

from __future__ import annotations

import importlib
import sys
import time

MODULES = [
    "vllm", "torch", "transformers", "modelscope", "openai", "vllm_router", "flashinfer",
    "cutlass",  # CuTe DSL, warmed up at engine start
    "vllm.entrypoints.cli.main",  # `vllm serve`
    "vllm.entrypoints.openai.api_server",
    "vllm.v1.engine.core",
    "vllm.v1.worker.gpu_worker",
    "vllm.v1.worker.gpu_model_runner",
    "vllm.model_executor.models.qwen3",
    "vllm.v1.attention.backends.flash_attn",  # what vLLM picks from on NVIDIA cards
    "vllm.v1.attention.backends.flashinfer",
    "vllm.v1.attention.backends.triton_attn",
    "vllm.v1.sample.ops.topk_topp_sampler",  # FlashInfer's top-k/top-p sampler
    "scripts.serve", "scripts.download", "scripts.router",
]  # fmt: skip


def parsers() -> str:
    """--reasoning-parser qwen3 and --tool-call-parser hermes, looked up as vLLM does."""
    from vllm.reasoning import ReasoningParserManager

    try:
        from vllm.tool_parsers import ToolParserManager
    except ImportError:  # vLLM before the move out of entrypoints
        from vllm.entrypoints.openai.tool_parsers import ToolParserManager
    reasoning = ReasoningParserManager.get_reasoning_parser("qwen3")
    tools = ToolParserManager.get_tool_parser("hermes")
    return f"reasoning parser qwen3 -> {reasoning.__name__}, tool parser hermes -> {tools.__name__}"


def main() -> int:
    t = time.monotonic()
    failed = {}
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - report every failure, then exit 1
            failed[name] = f"{type(e).__name__}: {e}"
    try:
        found = parsers()
    except Exception as e:  # noqa: BLE001
        failed["parsers"] = f"{type(e).__name__}: {e}"
        found = ""
    import torch
    import vllm

    print(f"imports: {len(MODULES) - len(failed)}/{len(MODULES)} in {time.monotonic() - t:.1f}s "
          f"(vllm {vllm.__version__}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"Python {sys.version.split()[0]}); {found}")  # fmt: skip
    for name, err in failed.items():
        print(f"import {name} FAILED: {err[:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
