"""Every setting of the bundle, declared once: its name, default, parser and one line of doc.
`.env.example` and the README's settings table are generated from `SETTINGS` (scripts/settings.py,
`python -m scripts.settings --write`); compose.yaml passes the containers' settings by name,
without defaults, and a test checks that every default compose or a script does restate (the
ones Compose itself needs, the gateway's) equals the one here.

Every entry point calls `load()`; a bad value stops with a message that names the setting and the
fix, before anything is downloaded or started. Standard library only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from scripts.stack import profiles
from scripts.stack.layout import TP_SIZES, Layout, LayoutError

ROOT = Path(__file__).resolve().parents[2]
PROFILES = tuple(profiles.PROFILES)
SOURCES = ("modelscope", "huggingface")
# each hub's default branch: what an empty MODEL_REVISION means
DEFAULT_REVISIONS = {"modelscope": "master", "huggingface": "main"}
DEVICES = ("cuda", "cpu")
TRACKS = ("cu124", "cu130")
# The CUDA base image of each GPU track, pinned by digest (scripts/pin_images.py rewrites these
# lines; the Dockerfile's and compose.yaml's defaults are checked against them in CI)
TRACK_IMAGES = {
    "cu124": "nvidia/cuda:12.4.1-base-ubuntu22.04@sha256:0f6bfcbf267e65123bcc2287e2153dedfc0f24772fb5ce84afe16ac4b2fada95",  # noqa: E501 pinned image
    "cu130": "nvidia/cuda:13.0.1-base-ubuntu24.04@sha256:f8ef28f579ea42a44b415d2c5d46f788e6a9b395c6c83f2929416e1fc192c143",  # noqa: E501 pinned image
}
GATEWAY_IMAGE = "nginxinc/nginx-unprivileged:1.27-alpine@sha256:65e3e85dbaed8ba248841d9d58a899b6197106c23cb0ff1a132b7bfe0547e4c0"  # noqa: E501 pinned image
ROUTER_POLICIES = ("round_robin", "power_of_two", "cache_aware", "consistent_hash", "random")
LOAD_FORMATS = ("auto", "safetensors", "dummy")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# where answers carry the reasoning (scripts/reasoning_fields.py): vLLM >= 0.17 `reasoning`, the
# tutorial's vLLM `reasoning_content`
REASONING_FIELDS = ("both", "reasoning", "reasoning_content")


class SettingsError(ValueError):
    """A setting has a value the bundle cannot use. str() names the setting and the fix;
    `problems` maps each setting at fault to its own message (doctor shows them on their rows)."""

    def __init__(self, message: str, problems: Mapping[str, str] | None = None):
        super().__init__(message)
        self.problems = dict(problems or {})


# --- parsers: raise ValueError with the fix as the message ------------------------------------


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw

    return parse


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
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
    value = _int_range(1, max(TP_SIZES))(raw)
    if value not in TP_SIZES:
        raise ValueError(f"must be {_TP_WORDS} (Qwen3-8B's 8 KV heads split evenly)")
    return value


_TP_WORDS = ", ".join(map(str, TP_SIZES[:-1])) + f" or {TP_SIZES[-1]}"  # 1, 2, 4 or 8


def _extra(raw: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(raw))
    except ValueError as e:
        raise ValueError(f"is not valid shell words ({e})") from None


def _revision(raw: str) -> str:
    if raw and not re.fullmatch(r"[\w./-]{1,100}", raw):  # empty: the hub's default branch
        raise ValueError("must be a branch, tag or commit, e.g. master")
    return raw


def _urls(raw: str) -> tuple[str, ...]:
    urls = tuple(raw.split())
    seen: dict[str, str] = {}
    for url in urls:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?/?", url):
            raise ValueError(
                f"has {url!r}: each worker must be http(s)://HOST:PORT, e.g. http://10.0.0.2:8000"
            )
        same = url.rstrip("/").lower()
        if same in seen:
            raise ValueError(
                f"has {seen[same]!r} and {url!r}: the same worker twice (the router would send "
                "it twice the share); list each worker once"
            )
        seen[same] = url
    return urls


def _hang_timeout(raw: str) -> int:
    value = _int_range(0, 3600)(raw)
    if 0 < value < 10:  # the healthcheck looks every 5-10 s: a shorter window is one look
        raise ValueError("must be 0 (off) or between 10 and 3600 seconds")
    return value


def _memory(raw: str) -> str:
    """Docker's memory sizes (mem_limit): a number of bytes, or with b, k, m or g."""
    m = re.fullmatch(r"(\d+)[bBkKmMgG]?", raw)
    if not m or int(m.group(1)) == 0:
        raise ValueError("must be a size like 64g or 512m")
    return raw


def _address(raw: str) -> str:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError("must be an IP address of this host, e.g. 127.0.0.1 or 0.0.0.0") from None
    return raw


def _size(raw: str) -> str:
    # what gateway/run.sh accepts too (tests/test_gateway_settings.py runs both): k or m, no g,
    # since the gateway holds a whole body in memory for its checks (mem_limit 256m)
    if not re.fullmatch(r"\d+[kKmM]?", raw):
        raise ValueError("must be a size like 4m or 512k")
    return raw


def _text(raw: str) -> str:
    return raw


# --- the registry ------------------------------------------------------------------------------

# Where a setting is read:
CONTAINER = "container"  # scripts/stack/settings.py in the containers (compose passes it by name);
# a COMPOSE setting with an attr is read by host-side scripts too (doctor: TRACK, API_KEY_FILE)
COMPOSE = "compose"  # Compose itself (${NAME:-default} in compose.yaml): ports, files, images
GATEWAY = "gateway"  # gateway/run.sh (compose passes it by name)
HUB = "hub"  # the download service's hub clients (compose passes it by name)
ROUTER = "router"  # the router, which compose.router.yaml (scripts/replicas.py) passes by name


_SAME = object()


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # as written in .env; "" means unset / empty
    doc: str  # one line, for .env.example and the README table
    section: str
    parse: Callable[[str], object] = _text
    attr: str = ""  # the Settings field, for container settings
    scope: str = CONTAINER
    public: bool = True  # listed in .env.example and the README (False: wiring and tests)
    # where the containers' default differs from the .env one (API_KEY_FILE: a host path for
    # Compose; unset inside the containers, where compose points it at the secret)
    container_default: object = _SAME
    example: str = ""  # a commented alternative line for .env.example


S = Setting
TRACK_SECTION = "image track (build time)"
MODEL = "model"
SERVING = "serving"
ACCESS = "access: the gateway (nginx) is the only published service"
SCALE = "several GPUs and hosts"
OPS = "operations"
MONITOR = "monitoring profile: COMPOSE_PROFILES=monitoring docker compose up -d"
SMOKE = "smoke test"
INTERNAL = "internal"

SETTINGS: tuple[Setting, ...] = (
    S("TRACK", "cu124", "cu124: CUDA 12.4 base + vLLM 0.19.1, driver >= 525 (550+ recommended); "
      "cu130: CUDA 13.0 base + vLLM 0.26.0 (measured on H100), driver >= 580",
      TRACK_SECTION, _choice(TRACKS), "track", scope=COMPOSE, example="TRACK=cu130"),
    S("BASE_IMAGE", TRACK_IMAGES["cu124"], "the CUDA base image of the track, pinned by digest "
      "(.env.example: the commented line is cu130's)",
      TRACK_SECTION, scope=COMPOSE, example=f"BASE_IMAGE={TRACK_IMAGES['cu130']}"),
    S("MODEL_ID", "Qwen/Qwen3-8B", "what to download and serve (OWNER/NAME on the hub); "
      "SERVE_PROFILE=fp8 / awq take Qwen's own checkpoint of it (Qwen/Qwen3-8B-FP8 / -AWQ); a "
      "repo that already ends in -FP8 / -AWQ, or another owner's, is served as given",
      MODEL, _model_id, "model_id"),
    S("MODEL_REVISION", "", "a branch, tag or commit of the repo served (fp8 / awq: of the -FP8 / "
      "-AWQ repo); empty: the hub's default branch (ModelScope master, Hugging Face main); pin a "
      "commit for reproducible deployments", MODEL, _revision, "model_revision"),
    S("MODEL_SOURCE", "modelscope", "modelscope (as in the tutorial) or huggingface",
      MODEL, _choice(SOURCES), "model_source"),
    S("MODELSCOPE_ENDPOINT", "", "a ModelScope mirror, e.g. a company proxy; empty: the public "
      "hub", MODEL, scope=HUB),
    S("HF_ENDPOINT", "https://huggingface.co", "the Hugging Face hub or a mirror", MODEL,
      scope=HUB),
    S("HF_TOKEN", "", "only for gated Hugging Face repos", MODEL, scope=HUB),
    S("DOWNLOAD_PROGRESS_INTERVAL", "10", "seconds between download progress lines in the "
      "logs; 0: only the summary", MODEL, _int_range(0, 3600), "download_progress_interval"),
    S("SERVED_MODEL_NAME", "Qwen3-8B", 'the model name clients send ("model": "Qwen3-8B")',
      SERVING, _name, "served_model_name"),
    S("MAX_MODEL_LEN", "8192", "prompt + answer tokens per request; KV cache costs 144 KiB per "
      "token in bf16 (72 in fp8)", SERVING, _int_range(256, 40960), "max_model_len"),
    S("GPU_MEMORY_UTILIZATION", "0.90", "share of GPU memory vLLM may take (0.05-0.98)",
      SERVING, _fraction, "gpu_memory_utilization"),
    S("SERVE_PROFILE", "default", " | ".join(PROFILES) + "   (fp8 serves Qwen's FP8 "
      "checkpoint, 9.4 GB of weights; awq its 4-bit AWQ checkpoint, 6.1 GB; the others bf16, "
      "16.4 GB; bench/README.md has the measurements, scripts/stack/profiles.py the flags)",
      SERVING, _choice(PROFILES), "profile"),
    S("REASONING_PARSER", "qwen3", "`qwen3` moves Qwen3's thinking out of the answer's "
      "`content` into the reasoning field(s) below; empty disables", SERVING, _parser_name,
      "reasoning_parser"),
    S("REASONING_FIELDS", "both", "where chat answers carry the reasoning, streamed or not: "
      "`both` (the same text under `reasoning`, today's vLLM's name, and `reasoning_content`, "
      "the tutorial's, which older clients read), `reasoning` (vLLM's answer as it is) or "
      "`reasoning_content` (the tutorial's answer); assistant messages sent with "
      "`reasoning_content` are read as `reasoning` either way", SERVING,
      _choice(REASONING_FIELDS), "reasoning_fields"),
    S("TOOL_CALL_PARSER", "hermes", "`hermes` parses Qwen3's tool-call output into `tool_calls`; "
      "empty disables tool calling", SERVING, _parser_name, "tool_call_parser"),
    S("SERVE_EXTRA_ARGS", "", "extra vLLM flags, shell-quoted, appended last (e.g. "
      "--max-num-seqs 128)", SERVING, _extra, "extra_args"),
    S("PREFLIGHT", "1", "1: before vLLM starts, check the driver, GPU count and GPU memory "
      "against these settings (`python3 -m scripts.doctor` runs them on the host); 0 skips",
      SERVING, _int_range(0, 1), "preflight"),
    S("MAX_N", "16", "most choices (`n`) one request may ask for (vLLM's own cap is 16384)",
      SERVING, _int_range(1, 128), "max_n"),
    S("LOAD_FORMAT", "auto", "auto | safetensors | dummy (random weights, no download: "
      "benchmarks of the serving path)", SERVING, _choice(LOAD_FORMATS), "load_format"),
    S("TENSOR_PARALLEL_SIZE", "1", f"GPUs per replica: {_TP_WORDS}", SCALE, _tensor_parallel,
      "tensor_parallel_size"),
    S("GPU_COUNT", "1", "GPUs the stack uses: GPU_COUNT / TENSOR_PARALLEL_SIZE replicas, "
      "vLLM's own data parallelism in one server", SCALE, _int_range(1, 64), "gpu_count"),
    S("ROUTER_POLICY", "round_robin", "router profile: how vllm-router picks a replica ("
      + ", ".join(ROUTER_POLICIES) + ")", SCALE, _choice(ROUTER_POLICIES), "router_policy",
      scope=ROUTER),
    S("ROUTER_WORKERS", "", "router profile: replica URLs (other hosts' gateways too); empty: "
      "this host's replicas", SCALE, _urls, "router_workers", scope=ROUTER),
    S("BIND_ADDRESS", "127.0.0.1", "the gateway is published on this address only; 0.0.0.0 "
      "exposes it to your network (then use TLS below)", ACCESS, _address, scope=COMPOSE),
    S("HOST_PORT", "8000", "the gateway's published port", ACCESS, _int_range(1, 65535),
      scope=COMPOSE),
    S("API_KEY_FILE", "./secrets/api_key", "the API keys, one per line (`python3 -m "
      "scripts.init_secrets` writes the first); clients send \"Authorization: Bearer <key>\" "
      "on every route but /health; the first line is also vLLM's own key", ACCESS, _abs_path,
      "api_key_file", scope=COMPOSE, container_default=None),
    S("TLS_DIR", "./secrets/tls", "tls.crt + tls.key in this folder: the gateway serves HTTPS "
      "only", ACCESS, scope=COMPOSE),
    S("GATEWAY_ROUTES", "/v1/models /v1/completions /v1/chat/completions", "the routes "
      "forwarded to vLLM (exact paths; everything else answers 404); /v1/models takes GET, every "
      "other route POST with a JSON object body (another method: 405)", ACCESS, scope=GATEWAY),
    S("GATEWAY_MAX_BODY", "4m", "largest request body (413 above it)", ACCESS, _size,
      scope=GATEWAY),
    S("GATEWAY_RATE", "20", "per key: requests per second (429 + Retry-After above it and the "
      "burst)", ACCESS, _int_range(1, 100000), scope=GATEWAY),
    S("GATEWAY_BURST", "40", "per key: requests above the rate let through at once", ACCESS,
      _int_range(1, 100000), scope=GATEWAY),
    S("GATEWAY_MAX_CONCURRENT", "32", "per key: requests at once (429 above it)", ACCESS,
      _int_range(1, 100000), scope=GATEWAY),
    S("SHUTDOWN_TIMEOUT", "30", "seconds vLLM lets in-flight requests finish on `docker "
      "compose stop` (grace period: 60 s)", OPS, _int_range(0, 3600), "shutdown_timeout"),
    S("HANG_TIMEOUT", "60", "seconds vLLM's engine may go without progress (no tokens done, a "
      "one-token probe unanswered) before the vllm container's healthcheck restarts it: /health "
      "answers 200 while an engine hangs (scripts/liveness.py); 0: /health alone", OPS,
      _hang_timeout, "hang_timeout"),
    S("SERVE_MEMORY_LIMIT", "64g", "memory limit of the vllm container (host RAM, not GPU "
      "memory)", OPS, _memory, scope=COMPOSE),
    S("API_DOCS", "0", "1: vLLM also serves /openapi.json and /docs (reachable only on the "
      "internal network)", OPS, _int_range(0, 1), "api_docs"),
    S("GRAFANA_PORT", "3000", "Grafana on 127.0.0.1:GRAFANA_PORT, user admin", MONITOR,
      _int_range(1, 65535), scope=COMPOSE),
    S("GRAFANA_ADMIN_PASSWORD_FILE", "./secrets/grafana_admin_password", "Grafana's admin "
      "password (init_secrets writes it)", MONITOR, scope=COMPOSE),
    S("SMOKE_CHECK_ANSWERS", "1", "0 skips answer-text checks (for --load-format dummy "
      "benchmarks)", SMOKE, _int_range(0, 1), scope=COMPOSE),
    # wiring and the CPU override: not user settings
    S("MODELS_DIR", "/models", "the models volume inside the containers", INTERNAL, _abs_path,
      "models_dir", public=False),
    S("SERVE_DEVICE", "cuda", "cpu: the CPU override", INTERNAL, _choice(DEVICES), "device",
      public=False),
    S("SERVE_DTYPE", "auto", "vLLM's --dtype (auto: the model's; float32 on CPU)", INTERNAL,
      _choice(DTYPES), "dtype", public=False),
    S("SERVE_HOST", "0.0.0.0", "vLLM's listen address in its container", INTERNAL, _name,
      "host", public=False),
    S("SERVE_PORT", "8000", "vLLM's port in its container", INTERNAL, _int_range(1, 65535),
      "port", public=False),
    S("VLLM_API_KEY", "", "the key itself (API_KEY_FILE is preferred)", INTERNAL, str,
      "api_key", public=False),
    S("GATEWAY_IMAGE", GATEWAY_IMAGE, "the gateway's nginx image", INTERNAL, scope=COMPOSE,
      public=False),
    S("CPU_MEMORY_UTILIZATION", "0.3", "CPU override: the share of RAM vLLM may take",
      INTERNAL, _fraction, scope=COMPOSE, public=False),
    S("VLLM_CPU_KVCACHE_SPACE", "1", "CPU override: GiB of KV cache", INTERNAL, scope=COMPOSE,
      public=False),
    S("CPU_BASE_IMAGE", "qwen3-vllm-stack/debian-base:bookworm", "CPU override: base image",
      INTERNAL, scope=COMPOSE, public=False),
)  # fmt: skip
BY_NAME = {s.name: s for s in SETTINGS}


def _field_default(name: str):
    """A Settings field's default: the registry's, parsed (the registry is the one place)."""
    s = BY_NAME[name]
    return s.parse(s.default) if s.container_default is _SAME else s.container_default


@dataclass(frozen=True)
class Settings:
    """What the containers' scripts use. Defaults come from SETTINGS."""

    model_id: str = _field_default("MODEL_ID")
    model_revision: str = _field_default("MODEL_REVISION")
    model_source: str = _field_default("MODEL_SOURCE")
    models_dir: Path = _field_default("MODELS_DIR")
    download_progress_interval: int = _field_default("DOWNLOAD_PROGRESS_INTERVAL")
    served_model_name: str = _field_default("SERVED_MODEL_NAME")
    max_model_len: int = _field_default("MAX_MODEL_LEN")
    gpu_memory_utilization: float = _field_default("GPU_MEMORY_UTILIZATION")
    tensor_parallel_size: int = _field_default("TENSOR_PARALLEL_SIZE")
    gpu_count: int = _field_default("GPU_COUNT")
    reasoning_parser: str = _field_default("REASONING_PARSER")
    reasoning_fields: str = _field_default("REASONING_FIELDS")
    tool_call_parser: str = _field_default("TOOL_CALL_PARSER")
    profile: str = _field_default("SERVE_PROFILE")
    device: str = _field_default("SERVE_DEVICE")
    dtype: str = _field_default("SERVE_DTYPE")
    load_format: str = _field_default("LOAD_FORMAT")
    track: str = _field_default("TRACK")
    host: str = _field_default("SERVE_HOST")
    port: int = _field_default("SERVE_PORT")
    api_key_file: Path | None = _field_default("API_KEY_FILE")
    api_key: str = field(default=_field_default("VLLM_API_KEY"), repr=False)
    shutdown_timeout: int = _field_default("SHUTDOWN_TIMEOUT")
    hang_timeout: int = _field_default("HANG_TIMEOUT")
    max_n: int = _field_default("MAX_N")
    api_docs: int = _field_default("API_DOCS")
    preflight: int = _field_default("PREFLIGHT")
    router_policy: str = _field_default("ROUTER_POLICY")
    router_workers: tuple[str, ...] = _field_default("ROUTER_WORKERS")
    extra_args: tuple[str, ...] = _field_default("SERVE_EXTRA_ARGS")

    @property
    def layout(self) -> Layout:
        """The GPU layout: TENSOR_PARALLEL_SIZE GPUs per replica, GPU_COUNT in all."""
        return Layout(self.gpu_count, self.tensor_parallel_size, self.device)

    @property
    def data_parallel_size(self) -> int:
        """vLLM data-parallel replicas in one server (scripts/stack/layout.py)."""
        return self.layout.data_parallel_size

    @property
    def checkpoint_id(self) -> str:
        """The repo downloaded and served: MODEL_ID, or Qwen's quantized checkpoint of it for
        SERVE_PROFILE=fp8 / awq (scripts/stack/profiles.py, checkpoint_id)."""
        return profiles.checkpoint_id(self.model_id, self.profile)

    @property
    def revision(self) -> str:
        """The branch, tag or commit to download: MODEL_REVISION, else the hub's default branch
        (ModelScope calls it master, Hugging Face main)."""
        return self.model_revision or DEFAULT_REVISIONS[self.model_source]

    @property
    def model_path(self) -> Path:
        """Where the weights live: one folder per repo inside the models volume."""
        return self.models_dir / self.checkpoint_id

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


# (environment name, field, parser) of every setting the containers read
FIELDS: list[tuple[str, str, Callable[[str], object]]] = [
    (s.name, s.attr, s.parse) for s in SETTINGS if s.attr
]
assert {a for _, a, _ in FIELDS} == {f.name for f in fields(Settings)}, "SETTINGS vs Settings"


def problems(env: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """Each invalid value among `names`: NAME -> the message with the fix. Unset or empty means
    the default. Doctor asks this for the settings Compose reads too."""
    out = {}
    for name in names:
        s, raw = BY_NAME[name], (env.get(name) or "").strip()  # None: Compose's unset
        if raw == "" or s.parse is _text:
            continue
        try:
            s.parse(raw)
        except ValueError as e:
            shown = "***" if name == "VLLM_API_KEY" else repr(raw)
            out[name] = f"{name}={shown} {e}; fix it in .env"
    return out


CONTAINER_NAMES = tuple(name for name, _, _ in FIELDS)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Parse every container setting; collect all problems and raise them together."""
    env = os.environ if env is None else env
    bad = problems(env, CONTAINER_NAMES)
    if bad:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(bad.values()), bad)
    values = {}
    for name, attr, parse in FIELDS:
        raw = (env.get(name) or "").strip()
        if raw != "":
            values[attr] = parse(raw)
    s = Settings(**values)  # type: ignore[arg-type]
    if profiles.PROFILES[s.profile].weights != profiles.BF16 and s.device == "cpu":
        message = (
            f"SERVE_PROFILE={s.profile} needs a GPU; use SERVE_PROFILE=default with "
            "SERVE_DEVICE=cpu"
        )
        raise SettingsError(message, {"SERVE_PROFILE": message})
    try:
        s.layout.check()  # GPU_COUNT and TENSOR_PARALLEL_SIZE must go together
    except LayoutError as e:
        raise SettingsError(str(e), {"GPU_COUNT": str(e)}) from None
    return s
