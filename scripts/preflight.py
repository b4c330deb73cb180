"""Preflight checks shared by the host-side doctor (`python3 -m scripts.doctor`) and the container
start (`scripts/serve.py`): does the NVIDIA driver suit the image track, are there enough GPUs,
does the model fit in GPU memory at these settings, and which settings would fit.

Pure functions over `Settings` and parsed `nvidia-smi` rows; stdlib only (the doctor runs on the
host's plain python3). The only I/O is `query_gpus`, which runs nvidia-smi.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from scripts import vllm_args
from scripts.settings import TRACK_IMAGES, Settings

OK, WARN, FAIL = "OK", "WARN", "FAIL"
GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class Row:
    """One check's verdict. `fix` is a command or .env line; `suggest` holds .env settings that
    make a FAIL go away (the doctor prints them as a "Suggested .env" block)."""

    check: str
    status: str
    detail: str
    fix: str = ""
    suggest: dict[str, str] = field(default_factory=dict)


# --- GPUs as nvidia-smi reports them ------------------------------------------------------------

NVIDIA_SMI = (
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.used,driver_version,uuid",
    "--format=csv,noheader,nounits",
)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_mib: int | None  # None where nvidia-smi says [N/A] (e.g. MIG mode)
    used_mib: int | None
    driver: str
    uuid: str = ""


def _mib(raw: str) -> int | None:
    raw = raw.strip()
    try:
        return int(float(raw))
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def parse_gpus(text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version[,uuid]
    --format=csv,noheader,nounits`, e.g. `0, NVIDIA H100 80GB HBM3, 81559, 0, 580.159.04, GPU-..`
    (recordings without the uuid column parse too). Raises ValueError on a line of another shape."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        uuid = parts.pop() if parts[-1].startswith(("GPU-", "MIG-")) else ""
        if len(parts) < 5 or not parts[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line: {line.strip()!r}")
        name = ", ".join(parts[1:-3])  # a name with a comma in it stays whole
        gpus.append(Gpu(int(parts[0]), name, _mib(parts[-3]), _mib(parts[-2]), parts[-1], uuid))
    return gpus


def visible(gpus: Sequence[Gpu], env: Mapping[str, str], names: Sequence[str]) -> list[Gpu]:
    """The GPUs a process may use, in its order: the first of `names` (CUDA_VISIBLE_DEVICES,
    NVIDIA_VISIBLE_DEVICES) that is set, as indexes or UUID prefixes; unset or `all`: every GPU.
    nvidia-smi lists every GPU of the host whatever those say, so a busy GPU 0 must not stop a
    server started on GPU 1."""
    for name in names:
        raw = env.get(name)
        if raw is None or raw.strip() in ("", "all"):
            continue
        chosen = []
        for item in (x.strip() for x in raw.split(",")):
            if item.isdigit():
                chosen += [g for g in gpus if g.index == int(item)]
            elif item.startswith(("GPU-", "MIG-")):
                chosen += [g for g in gpus if g.uuid and g.uuid.startswith(item)]
            else:  # "none", "void", "-1": CUDA stops at the first entry it cannot use
                break
        return chosen
    return list(gpus)


def query_gpus(timeout: float = 30) -> tuple[list[Gpu] | None, str]:
    """Run nvidia-smi. (gpus, "") on success; (None, why) when it is missing or fails."""
    try:
        r = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return None, "nvidia-smi not found"
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nvidia-smi did not run ({type(e).__name__})"
    if r.returncode != 0:
        why = (r.stdout + r.stderr).strip().splitlines()
        return None, f"nvidia-smi failed: {why[0] if why else f'exit {r.returncode}'}"
    try:
        return parse_gpus(r.stdout), ""
    except ValueError as e:
        return None, str(e)


# --- driver against the image track -------------------------------------------------------------
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
        return Row("NVIDIA driver", FAIL, "no NVIDIA GPU listed by nvidia-smi", _NO_GPU_FIX)
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


_NO_GPU_FIX = (
    "install the NVIDIA driver (>= 550.54.14), or run on CPU: SERVE_DEVICE=cpu and "
    "docker compose -f compose.yaml -f compose.cpu.yaml up"
)


# --- GPU count ----------------------------------------------------------------------------------


def largest_tp(n: int, kv_heads: int = 8) -> int:
    """The largest tensor-parallel size (1, 2, 4, 8) that n GPUs and kv_heads allow."""
    tp = 1
    while tp * 2 <= min(n, 8) and kv_heads % (tp * 2) == 0:
        tp *= 2
    return tp


def check_gpu_count(tp: int, gpus: Sequence[Gpu], gpu_count: int | None = None) -> Row:
    """Enough GPUs for GPU_COUNT (TENSOR_PARALLEL_SIZE x data-parallel replicas) among those
    visible: on the host, those Docker can reserve; in the container, those it was handed.
    gpu_count None: TENSOR_PARALLEL_SIZE alone."""
    n = len(gpus)
    need = tp if gpu_count is None else gpu_count
    if n == 0:
        return Row("GPU count", FAIL, "no NVIDIA GPU visible", _NO_GPU_FIX)
    if n < tp:
        fit = largest_tp(n)
        return Row(
            "GPU count", FAIL,
            f"{n} GPU(s) visible, fewer than TENSOR_PARALLEL_SIZE={tp}",
            f"set TENSOR_PARALLEL_SIZE={fit} and GPU_COUNT={fit} in .env",
            {"TENSOR_PARALLEL_SIZE": str(fit), "GPU_COUNT": str(fit)},
        )  # fmt: skip
    if need > n:
        fit = n // tp * tp
        return Row(
            "GPU count", FAIL,
            f"GPU_COUNT={need} but {n} GPU(s) visible: {need // tp} replica(s) of "
            f"TENSOR_PARALLEL_SIZE={tp} do not fit",
            f"set GPU_COUNT={fit} in .env", {"GPU_COUNT": str(fit)},
        )  # fmt: skip
    dp = need // tp
    return Row(
        "GPU count", OK,
        f"{n} GPU(s) visible; GPU_COUNT={need}: {dp} replica(s) x TENSOR_PARALLEL_SIZE={tp}",
    )  # fmt: skip


# --- what the model needs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer's config.json that memory depends on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    max_position: int
    dtype_bytes: int = 2

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of one layer's projections as the checkpoint stores them: q, k, v, o,
        gate, up, down (what fp8 and AWQ quantize)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i)]

    def linear_params(self) -> int:
        """Parameters in the attention and MLP projections."""
        return self.layers * sum(o * i for o, i in self.linear_shapes())

    def other_params(self) -> int:
        """Embedding, LM head and norms (unquantized in Qwen's FP8 and AWQ checkpoints)."""
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        norms = self.layers * (2 * self.hidden + 2 * self.head_dim) + self.hidden
        return embed + norms

    def params(self) -> int:
        return self.linear_params() + self.other_params()

    def weight_bytes(
        self, fmt: str = "bf16", dtype_bytes: int | None = None, quant: Mapping | None = None
    ) -> int:
        """Bytes of the weights vLLM holds for a checkpoint of this format (vllm_args' BF16,
        FP8, AWQ). Quantized projections: fp8 block-wise is 1 byte a weight plus a float32
        scale per block (weight_block_size, e.g. 128 x 128); AWQ packs 4-bit weights 8 to an
        int32 plus, per group of group_size inputs and per output, an fp16 scale and a 4-bit
        zero point (8 to an int32). The rest stays in the checkpoint's dtype. `quant` is the
        checkpoint's quantization_config (the profile's declared one by default)."""
        b = self.dtype_bytes if dtype_bytes is None else dtype_bytes
        rest = self.other_params() * b
        if fmt == vllm_args.BF16:
            return self.linear_params() * b + rest
        q = dict(quant_config(fmt) if quant is None else quant)
        per_layer = 0
        if fmt == vllm_args.FP8:
            bo, bi = q.get("weight_block_size") or (0, 0)
            for o, i in self.linear_shapes():
                scales = math.ceil(o / bo) * math.ceil(i / bi) if bo and bi else 1
                per_layer += o * i + 4 * scales
        elif fmt == vllm_args.AWQ:
            bits, group = int(q["bits"]), int(q["group_size"])
            for o, i in self.linear_shapes():
                groups = math.ceil(i / group) if group > 0 else 1
                zeros = groups * o * bits / 8 if q.get("zero_point") else 0
                per_layer += o * i * bits / 8 + groups * o * 2 + zeros
        else:
            raise ValueError(f"no memory model for {fmt!r} weights")
        return math.ceil(self.layers * per_layer) + rest

    def kv_bytes_per_token(self, kv_bytes: int) -> int:
        """K and V of every layer for one token: layers x kv_heads x head_dim x 2 x bytes."""
        return self.layers * self.kv_heads * self.head_dim * 2 * kv_bytes


# Qwen3-8B's config.json (the same numbers as tests/fixtures/standins.py's QWEN3_8B): 8.19e9
# parameters, 16.4 GB in bf16 (vLLM on the H100 logged "Model loading took 15.27 GiB"; Qwen's
# FP8 checkpoint: 8.79 GiB by weight_bytes, its AWQ one 5.68 GiB, where a public vLLM 0.24 run
# logged 5.71 GiB for Qwen/Qwen3-8B-AWQ; neither measured here yet), KV cache
# 36 x 8 x 128 x 2 x 2 bytes = 144 KiB per token in bf16, 72 KiB in fp8 (the same logs: 54.48 GiB
# held 396,720 tokens in bf16; 54.16 GiB held 788,704 in fp8: bench/results/2026-11-24-h100/).
QWEN3_8B = ModelShape(
    layers=36, hidden=4096, intermediate=12288, heads=32, kv_heads=8, head_dim=128,
    vocab=151936, tied=False, max_position=40960,
)  # fmt: skip
# Qwen/Qwen3-8B and its FP8 / AWQ checkpoints (the same shape, another weight format)
KNOWN_MODELS: dict[str, ModelShape] = {
    vllm_args.checkpoint_id("Qwen/Qwen3-8B", name): QWEN3_8B for name in vllm_args.PROFILES
}


def quant_config(fmt: str) -> Mapping:
    """The quantization_config a profile of this weight format declares (scripts/vllm_args)."""
    for p in vllm_args.PROFILES.values():
        if p.weights == fmt and p.quantization_config is not None:
            return p.quantization_config
    raise ValueError(f"no profile serves {fmt!r} weights")


def folder_quant(config_text: str | None) -> Mapping | None:
    """The quantization_config of a downloaded config.json, when there is one."""
    try:
        cfg = json.loads(config_text) if config_text else None
    except ValueError:
        return None
    quant = cfg.get("quantization_config") if isinstance(cfg, Mapping) else None
    return quant if isinstance(quant, Mapping) else None


DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def shape_from_config(cfg: Mapping) -> ModelShape | None:
    """A ModelShape from a Hugging Face config.json; None when it lacks the numbers."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), Mapping) else cfg
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        return ModelShape(
            layers=int(text["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(text["intermediate_size"]),
            heads=heads,
            kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            vocab=int(text["vocab_size"]),
            tied=bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            max_position=int(text.get("max_position_embeddings") or 0),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def model_shape(s: Settings, config_text: str | None = None) -> ModelShape | None:
    """Known numbers for Qwen/Qwen3-8B (and its quantized checkpoints); for another model, its
    config.json when we have it."""
    for repo in (s.checkpoint_id, s.model_id):
        if repo in KNOWN_MODELS:
            return KNOWN_MODELS[repo]
    if config_text is None:
        return None
    try:
        return shape_from_config(json.loads(config_text))
    except ValueError:
        return None


# Memory vLLM takes besides weights and KV cache, inside GPU_MEMORY_UTILIZATION: peak activations
# and non-torch allocations. Measured on the H100 (bench/results/2026-11-24-h100/*.log.txt):
# 1.29-1.58 GiB activations + 0.22 GiB non-torch, and CUDA reports 0.47 GiB less total memory
# than nvidia-smi's memory.total; 2 GiB off util x memory.total predicts the logged KV cache
# (54.2-54.5 GiB) within 0.3 GiB. CUDA graphs (about 1.1 GiB) live outside that share.
OVERHEAD_BYTES = 2 * GIB
# vLLM refuses to start when CUDA's free memory < utilization x CUDA's total. On the H100 CUDA's
# total was 479 MiB under nvidia-smi's memory.total (81559 MiB vs 79.18 GiB: the driver's
# reservation) and vLLM's own CUDA context took 532 MiB before the check (78.66 GiB free).
# Drivers differ in whether memory.used counts the reservation; FAIL uses the lenient reading
# (a false FAIL would stop a start that works), a suggested utilization the strict one.
CONTEXT_MIB = 530
RESERVED_MIB = 480
MAX_LEN_CAP = QWEN3_8B.max_position
WARN_SEQS = 8


@dataclass(frozen=True)
class Need:
    """What one GPU holds at these settings (weights split by tensor parallelism)."""

    weights: int  # bytes per GPU
    kv_per_token: int  # bytes per token per GPU
    weight_format: str  # vllm_args' BF16, FP8 or AWQ
    fp8_kv: bool
    tp: int

    @property
    def fp8_weights(self) -> bool:
        return self.weight_format == vllm_args.FP8

    def budget(self, total_mib: int, util: float) -> float:
        return total_mib * MIB * util - self.weights - OVERHEAD_BYTES

    def tokens(self, total_mib: int, util: float) -> int:
        return max(0, int(self.budget(total_mib, util) // self.kv_per_token))


def model_memory_need(
    s: Settings,
    shape: ModelShape,
    profile: str | None = None,
    tp: int | None = None,
    quant: Mapping | None = None,
) -> Need:
    """Bytes per GPU for the weights and per token of KV cache, for this profile and TP: the
    weight format of the checkpoint the profile serves (scripts/vllm_args.py's PROFILES, or
    online fp8 where SERVE_EXTRA_ARGS asks for it) and the KV cache type of the argument list
    vllm_args builds, so the estimate and what vLLM is told cannot disagree. `quant`: the
    downloaded checkpoint's quantization_config (group size, block size), when known."""
    profile = s.profile if profile is None else profile
    tp = s.tensor_parallel_size if tp is None else tp
    s = replace(s, profile=profile, tensor_parallel_size=tp)
    args = vllm_args.build_args(s)
    fmt, fp8_kv = vllm_args.weight_format(s, args), vllm_args.fp8_kv_cache(args)
    dbytes = DTYPE_BYTES.get(vllm_args.flag(args, "--dtype") or "auto", shape.dtype_bytes)
    if fmt == vllm_args.FP8 and vllm_args.PROFILES[profile].weights == vllm_args.BF16:
        quant = {}  # online fp8: one scale per tensor, not blocks
    weights = shape.weight_bytes(fmt, dbytes, quant)
    kv = shape.kv_bytes_per_token(1 if fp8_kv else dbytes)
    return Need(math.ceil(weights / tp), math.ceil(kv / tp), fmt, fp8_kv, tp)


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _round_len(tokens: int, cap: int) -> int:
    return min(cap, tokens // 1024 * 1024)


def _profile_names(need: Need) -> str:
    kv = "fp8" if need.fp8_kv else "bf16"
    return f"{need.weight_format} weights, {kv} KV cache"


def suggest_fit(
    s: Settings, shape: ModelShape, total_mib: int, n_gpus: int, quant: Mapping | None = None
) -> tuple[dict[str, str], str]:
    """The smallest change of settings with which one MAX_MODEL_LEN sequence fits: a profile
    with an fp8 KV cache, Qwen's FP8 checkpoint, its 4-bit AWQ checkpoint, more GPUs, or a
    shorter MAX_MODEL_LEN (in that order). `quant`: the downloaded checkpoint's
    quantization_config (it describes the current profile's checkpoint only).
    Returns (.env settings, explanation); ({}, why) when nothing fits this GPU."""
    util, length, tp = s.gpu_memory_utilization, s.max_model_len, s.tensor_parallel_size
    cap = min(MAX_LEN_CAP, shape.max_position or MAX_LEN_CAP)
    profiles = [s.profile]
    if s.profile in ("plain", "latency"):
        profiles.append("default")  # the same bf16 weights, half the KV cache
    if s.device == "cuda":
        profiles += [p for p in ("fp8", "awq") if p != s.profile]

    def need(p: str, t: int) -> Need:
        return model_memory_need(s, shape, p, t, quant if p == s.profile else None)

    tps = [tp] + [t for t in (2, 4, 8) if tp < t <= n_gpus and shape.kv_heads % t == 0]
    for t in tps:
        for p in profiles:
            if need(p, t).tokens(total_mib, util) >= length:
                out = {}
                if p != s.profile:
                    out["SERVE_PROFILE"] = p
                if t != tp:
                    out.update(TENSOR_PARALLEL_SIZE=str(t), GPU_COUNT=str(t))
                return out, f"fits with {_profile_names(need(p, t))} on {t} GPU(s)"
    # shorter sequences: the profile that holds the most tokens on the current TP
    best = max(profiles, key=lambda p: need(p, tp).tokens(total_mib, util))
    tokens = need(best, tp).tokens(total_mib, util)
    fit = _round_len(tokens, cap)
    if fit >= 1024:
        out = {"SERVE_PROFILE": best} if best != s.profile else {}
        out["MAX_MODEL_LEN"] = str(fit)
        return out, f"{tokens} tokens of KV cache fit with SERVE_PROFILE={best}"
    return {}, f"not even 1024 tokens fit on this GPU with {_profile_names(need(best, tp))}"


# what a suggested profile asks of the GPU (vLLM's minimum for fp8 block-wise on Marlin and for
# AWQ is Turing; fp8 runs natively on Ada / Hopper, through Marlin on older cards)
PROFILE_NOTES = {
    "fp8": "; fp8 downloads Qwen's FP8 checkpoint (Qwen/Qwen3-8B-FP8), native on Ada/Hopper",
    "awq": "; awq downloads Qwen's 4-bit AWQ checkpoint (Qwen/Qwen3-8B-AWQ), Marlin kernels",
}


def check_gpu_memory(
    s: Settings,
    gpus: Sequence[Gpu],
    shape: ModelShape | None,
    tp: int | None = None,
    quant: Mapping | None = None,
) -> Row:
    """Does one full MAX_MODEL_LEN sequence fit next to the weights on the smallest of the first
    TP GPUs (vLLM refuses to start otherwise)? FAIL with the settings that fit; WARN when fewer
    than 8 full sequences fit."""
    name = "GPU memory"
    tp = s.tensor_parallel_size if tp is None else tp
    used = list(gpus[: max(tp, s.gpu_count)])  # every replica's GPUs hold a whole copy
    if not used:
        return Row(name, WARN, "not checked: no GPU information", "see the GPU rows above")
    if shape is None:
        return Row(
            name, WARN, f"unknown model size for MODEL_ID={s.model_id}: memory not checked",
            "download it first (docker compose run --rm download) so config.json can be read",
        )  # fmt: skip
    sized = [g for g in used if g.total_mib]
    if not sized:
        return Row(name, WARN, "nvidia-smi reports no memory size (MIG?): not checked", "")
    gpu = min(sized, key=lambda g: g.total_mib or 0)
    total, util, length = gpu.total_mib or 0, s.gpu_memory_utilization, s.max_model_len
    if tp != s.tensor_parallel_size:
        s = replace(s, tensor_parallel_size=tp)
    need = model_memory_need(s, shape, quant=quant)
    tokens = need.tokens(total, util)
    seqs = tokens // length
    per_gpu = f" per GPU (TP={tp})" if tp > 1 else ""
    where = (
        f"{gpu.name} {total / 1024:.0f} GiB x {util:.2f} = {gib(total * MIB * util)}{per_gpu}: "
        f"weights {gib(need.weights)} ({_profile_names(need)}) + {gib(OVERHEAD_BYTES)} "
        f"overhead leave {gib(max(0, need.budget(total, util)))} = {tokens} tokens of KV cache"
    )
    if seqs < 1:
        suggest, why = suggest_fit(s, shape, total, len(gpus), quant)
        if suggest:
            fix = " and ".join(f"{k}={v}" for k, v in suggest.items()) + f" in .env ({why})"
            fix += PROFILE_NOTES.get(suggest.get("SERVE_PROFILE", ""), "")
        else:
            fix = f"use a GPU with more memory ({why}), or raise GPU_MEMORY_UTILIZATION (max 0.98)"
        if need.budget(total, util) <= 0:
            detail = (
                f"the weights do not fit: {gpu.name} {total / 1024:.0f} GiB x {util:.2f} = "
                f"{gib(total * MIB * util)}{per_gpu} < weights {gib(need.weights)} "
                f"({_profile_names(need)}) + {gib(OVERHEAD_BYTES)} overhead"
            )
        else:
            detail = f"{where}, less than one MAX_MODEL_LEN={length} sequence"
        return Row(name, FAIL, detail, fix, suggest)
    if seqs < WARN_SEQS:
        eight = _round_len(tokens // WARN_SEQS, MAX_LEN_CAP)
        hint = f"MAX_MODEL_LEN={eight}" if eight >= 1024 else "a GPU with more memory"
        if not need.fp8_kv:
            hint = f"SERVE_PROFILE=default (fp8 KV cache, twice the tokens) or {hint}"
        return Row(
            name, WARN, f"{where}: only {seqs} full MAX_MODEL_LEN={length} sequence(s) at once",
            f"for {WARN_SEQS} concurrent full-length requests: {hint}",
        )  # fmt: skip
    return Row(name, OK, f"{where}: {seqs} full {length}-token sequences at once")


def check_gpu_free(
    s: Settings, gpus: Sequence[Gpu], shape: ModelShape | None = None, quant: Mapping | None = None
) -> Row:
    """Memory other processes hold: vLLM needs GPU_MEMORY_UTILIZATION x total free at start."""
    name = "GPU free memory"
    used = [g for g in gpus[: s.gpu_count] if g.total_mib and g.used_mib is not None]
    if not used:
        return Row(name, WARN, "not checked: no GPU memory information", "")
    util = s.gpu_memory_utilization

    def free(g: Gpu) -> int:
        return (g.total_mib or 0) - (g.used_mib or 0) - CONTEXT_MIB

    worst = min(used, key=lambda g: free(g) - util * ((g.total_mib or 0) - RESERVED_MIB))
    total, taken = worst.total_mib or 0, worst.used_mib or 0
    if free(worst) >= util * (total - RESERVED_MIB):
        return Row(name, OK, f"GPU {worst.index}: {taken} MiB in use, {free(worst)} MiB free")
    fit = math.floor((free(worst) - RESERVED_MIB) / total * 100) / 100
    detail = (
        f"GPU {worst.index} ({worst.name}): {taken} MiB of {total} MiB held by other processes; "
        f"vLLM starts only with GPU_MEMORY_UTILIZATION={util} x total = {util * total:.0f} MiB "
        f"free (and ~{CONTEXT_MIB} MiB for its CUDA context)"
    )
    stop = f"stop the processes using GPU {worst.index} (nvidia-smi lists them)"
    if fit >= 0.05 and shape is not None:
        lower = replace(s, gpu_memory_utilization=fit)
        if check_gpu_memory(lower, gpus, shape, quant=quant).status != FAIL:
            return Row(
                name, FAIL, detail,
                f"GPU_MEMORY_UTILIZATION={fit:.2f} in .env, or {stop}",
                {"GPU_MEMORY_UTILIZATION": f"{fit:.2f}"},
            )  # fmt: skip
    return Row(name, FAIL, detail, f"{stop}: at a lower GPU_MEMORY_UTILIZATION the model won't fit")


# --- settings rows ------------------------------------------------------------------------------


def check_max_len(s: Settings, shape: ModelShape | None) -> Row:
    limit = shape.max_position if shape and shape.max_position else None
    if limit is None:
        return Row("MAX_MODEL_LEN", OK, f"{s.max_model_len} (model limit unknown)")
    if s.max_model_len > limit:
        return Row(
            "MAX_MODEL_LEN", FAIL,
            f"{s.max_model_len} > {limit}, the model's max_position_embeddings",
            f"MAX_MODEL_LEN={limit} in .env", {"MAX_MODEL_LEN": str(limit)},
        )  # fmt: skip
    return Row(
        "MAX_MODEL_LEN", OK, f"{s.max_model_len} <= {limit} (the model's max_position_embeddings)"
    )


def check_tp_heads(s: Settings, shape: ModelShape | None) -> Row:
    heads = shape.kv_heads if shape else QWEN3_8B.kv_heads
    tp = s.tensor_parallel_size
    if heads % tp:
        fit = largest_tp(tp, heads)
        return Row(
            "TENSOR_PARALLEL_SIZE", FAIL, f"{tp} does not divide the model's {heads} KV heads",
            f"TENSOR_PARALLEL_SIZE={fit} in .env", {"TENSOR_PARALLEL_SIZE": str(fit)},
        )  # fmt: skip
    return Row("TENSOR_PARALLEL_SIZE", OK, f"{tp} divides the model's {heads} KV heads")


# --- the container start ------------------------------------------------------------------------


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
