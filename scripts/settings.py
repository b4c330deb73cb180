"""The bundle's settings: read from the environment (compose passes .env), defaulted and validated
in this one place. Every CLI under scripts/ calls `load()`; a bad value stops with a message that
names the setting and the fix, before anything is downloaded or started.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("plain", "default", "latency", "throughput", "fp8")
SOURCES = ("modelscope", "huggingface")
# each hub's default branch: what an empty MODEL_REVISION means
DEFAULT_REVISIONS = {"modelscope": "master", "huggingface": "main"}
DEVICES = ("cuda", "cpu")
TRACKS = ("cu124", "cu130")
ROUTER_POLICIES = ("power_of_two", "round_robin", "cache_aware", "consistent_hash", "random")
LOAD_FORMATS = ("auto", "safetensors", "dummy")
DTYPES = ("auto", "bfloat16", "float16", "float32")


class SettingsError(ValueError):
    """A setting has a value the bundle cannot use. str() names the setting and the fix."""


@dataclass(frozen=True)
class Settings:
    model_id: str = "Qwen/Qwen3-8B"
    model_revision: str = ""  # empty: the hub's default branch (`revision`)
    model_source: str = "modelscope"
    models_dir: Path = Path("/models")
    download_progress_interval: int = 10  # seconds between download progress lines; 0: none
    served_model_name: str = "Qwen3-8B"
    max_model_len: int = 8192
    gpu_memory_utilization: float = 0.90
    tensor_parallel_size: int = 1
    gpu_count: int = 1  # GPUs the vllm service reserves: GPU_COUNT / TP data-parallel replicas
    reasoning_parser: str = "qwen3"
    tool_call_parser: str = "hermes"
    profile: str = "default"
    device: str = "cuda"
    dtype: str = "auto"
    load_format: str = "auto"
    track: str = "cu124"
    host: str = "0.0.0.0"
    port: int = 8000
    api_key_file: Path | None = None
    api_key: str = field(default="", repr=False)
    shutdown_timeout: int = 30
    max_n: int = 16  # most choices (`n`) one request may ask for
    api_docs: int = 0  # 1: vLLM serves /openapi.json and /docs (behind the gateway: never public)
    router_policy: str = "power_of_two"  # how vllm-router picks a replica (router profile)
    router_workers: tuple[str, ...] = ()  # replica URLs; empty: vllm-0.. from GPU_COUNT / TP
    preflight: int = 1  # 0 skips the GPU checks serve runs before vLLM (scripts/preflight.py)
    extra_args: tuple[str, ...] = ()

    @property
    def data_parallel_size(self) -> int:
        """vLLM data-parallel replicas in one server: every reserved GPU used, TP GPUs each."""
        return self.gpu_count // self.tensor_parallel_size if self.device == "cuda" else 1

    @property
    def revision(self) -> str:
        """The branch, tag or commit to download: MODEL_REVISION, else the hub's default branch
        (ModelScope calls it master, Hugging Face main)."""
        return self.model_revision or DEFAULT_REVISIONS[self.model_source]

    @property
    def model_path(self) -> Path:
        """Where the weights live: one folder per model id inside the models volume."""
        return self.models_dir / self.model_id

    def resolved_api_key(self) -> str:
        """The API key, from the secret file if one is set (preferred), else from VLLM_API_KEY."""
        if self.api_key_file is not None:
            try:
                keys = read_keys(self.api_key_file.read_text())
                key = keys[0] if keys else ""  # vLLM's own key is the first
            except OSError as e:
                raise SettingsError(
                    f"API_KEY_FILE={self.api_key_file}: cannot read it ({e.strerror}); "
                    "create the file (scripts/init_secrets does) or unset API_KEY_FILE"
                ) from None
            if not key:
                raise SettingsError(
                    f"API_KEY_FILE={self.api_key_file} is empty; put a key in it "
                    "(e.g. `openssl rand -hex 32 > secrets/api_key`)"
                )
            return key
        return self.api_key


def read_keys(text: str) -> list[str]:
    """The keys in an API key file: one per line, blank lines and # comments skipped (the
    gateway accepts them all; gateway/run.sh reads the file the same way)."""
    lines = (line.strip() for line in text.splitlines())
    return [k for k in lines if k and not k.startswith("#")]


# (environment name, field, parser); parsers raise ValueError with the fix as the message
def _choice(options: tuple[str, ...]):
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw

    return parse


def _int_range(lo: int, hi: int):
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number between {lo} and {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number between 0.05 and 0.98, e.g. 0.90") from None
    if not 0.05 <= value <= 0.98:
        raise ValueError("must be between 0.05 and 0.98 (the share of memory vLLM may take)")
    return value


def _model_id(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", raw) or ".." in raw:
        raise ValueError("must look like OWNER/NAME, e.g. Qwen/Qwen3-8B")
    return raw


def _name(raw: str) -> str:
    if not re.fullmatch(r"[\w.:/-]{1,128}", raw):
        raise ValueError("must be 1-128 letters, digits or . _ : / -")
    return raw


def _parser_name(raw: str) -> str:
    if raw and not re.fullmatch(r"[a-z0-9_]+", raw):
        raise ValueError("must be a vLLM parser name such as qwen3 or hermes, or empty to disable")
    return raw


def _abs_path(raw: str) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        raise ValueError("must be an absolute path")
    return path


def _tensor_parallel(raw: str) -> int:
    value = _int_range(1, 8)(raw)
    if value & (value - 1):
        raise ValueError("must be 1, 2, 4 or 8 (Qwen3-8B's 8 KV heads split evenly)")
    return value


def _extra(raw: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(raw))
    except ValueError as e:
        raise ValueError(f"is not valid shell words ({e})") from None


def _urls(raw: str) -> tuple[str, ...]:
    urls = tuple(raw.split())
    for url in urls:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?/?", url):
            raise ValueError(
                f"has {url!r}: each worker must be http(s)://HOST:PORT, e.g. http://10.0.0.2:8000"
            )
    return urls


def _revision(raw: str) -> str:
    if not re.fullmatch(r"[\w./-]{1,100}", raw):
        raise ValueError("must be a branch, tag or commit, e.g. master")
    return raw


FIELDS: list[tuple[str, str, object]] = [
    ("MODEL_ID", "model_id", _model_id),
    ("MODEL_REVISION", "model_revision", _revision),
    ("MODEL_SOURCE", "model_source", _choice(SOURCES)),
    ("MODELS_DIR", "models_dir", _abs_path),
    ("DOWNLOAD_PROGRESS_INTERVAL", "download_progress_interval", _int_range(0, 3600)),
    ("SERVED_MODEL_NAME", "served_model_name", _name),
    ("MAX_MODEL_LEN", "max_model_len", _int_range(256, 40960)),
    ("GPU_MEMORY_UTILIZATION", "gpu_memory_utilization", _fraction),
    ("TENSOR_PARALLEL_SIZE", "tensor_parallel_size", _tensor_parallel),
    ("GPU_COUNT", "gpu_count", _int_range(1, 64)),
    ("REASONING_PARSER", "reasoning_parser", _parser_name),
    ("TOOL_CALL_PARSER", "tool_call_parser", _parser_name),
    ("SERVE_PROFILE", "profile", _choice(PROFILES)),
    ("SERVE_DEVICE", "device", _choice(DEVICES)),
    ("SERVE_DTYPE", "dtype", _choice(DTYPES)),
    ("LOAD_FORMAT", "load_format", _choice(LOAD_FORMATS)),
    ("TRACK", "track", _choice(TRACKS)),
    ("SERVE_HOST", "host", _name),
    ("SERVE_PORT", "port", _int_range(1, 65535)),
    ("API_KEY_FILE", "api_key_file", _abs_path),
    ("VLLM_API_KEY", "api_key", str),
    ("SHUTDOWN_TIMEOUT", "shutdown_timeout", _int_range(0, 3600)),
    ("MAX_N", "max_n", _int_range(1, 128)),
    ("API_DOCS", "api_docs", _int_range(0, 1)),
    ("ROUTER_POLICY", "router_policy", _choice(ROUTER_POLICIES)),
    ("ROUTER_WORKERS", "router_workers", _urls),
    ("PREFLIGHT", "preflight", _int_range(0, 1)),
    ("SERVE_EXTRA_ARGS", "extra_args", _extra),
]


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Parse every setting; collect all problems and raise them together."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    problems: list[str] = []
    for name, attr, parse in FIELDS:
        raw = env.get(name, "").strip()
        if raw == "":
            continue  # unset or empty: the default
        try:
            values[attr] = parse(raw)  # type: ignore[operator]
        except ValueError as e:
            shown = "***" if "KEY" in name else repr(raw)
            problems.append(f"{name}={shown} {e}; fix it in .env")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    s = Settings(**values)  # type: ignore[arg-type]
    if s.profile == "fp8" and s.device == "cpu":
        raise SettingsError(
            "SERVE_PROFILE=fp8 needs a GPU; use SERVE_PROFILE=default with SERVE_DEVICE=cpu"
        )
    if s.device == "cuda" and s.gpu_count % s.tensor_parallel_size:
        tp, n = s.tensor_parallel_size, s.gpu_count
        raise SettingsError(
            f"GPU_COUNT={n} is not a multiple of TENSOR_PARALLEL_SIZE={tp}: each data-parallel "
            f"replica takes {tp} GPUs; fix: GPU_COUNT={max(tp, n // tp * tp)} in .env "
            f"(or TENSOR_PARALLEL_SIZE=1)"
        )
    return s
