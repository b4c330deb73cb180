"""Does the model fit in GPU memory at these settings, and which settings would fit: the weights of
the checkpoint the profile serves and the KV cache of the argument list scripts/stack/vllm_args.py
builds, so the estimate and what vLLM is told cannot disagree. Pure functions over Settings and
parsed nvidia-smi rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scripts.checks.gpus import Gpu
from scripts.checks.row import FAIL, OK, WARN, Row
from scripts.stack import profiles, vllm_args
from scripts.stack.layout import largest_tp
from scripts.stack.model import DTYPE_BYTES, QWEN3_8B, ModelShape
from scripts.stack.settings import Settings

GIB = 1 << 30
MIB = 1 << 20

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
        return self.weight_format == profiles.FP8

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
    weight format of the checkpoint the profile serves (scripts/stack/profiles.py, or
    online fp8 where SERVE_EXTRA_ARGS asks for it) and the KV cache type of the argument list
    vllm_args builds, so the estimate and what vLLM is told cannot disagree. `quant`: the
    downloaded checkpoint's quantization_config (group size, block size), when known."""
    profile = s.profile if profile is None else profile
    tp = s.tensor_parallel_size if tp is None else tp
    s = replace(s, profile=profile, tensor_parallel_size=tp)
    args = vllm_args.build_args(s)
    fmt, fp8_kv = vllm_args.weight_format(s, args), vllm_args.fp8_kv_cache(args)
    dbytes = DTYPE_BYTES.get(vllm_args.flag(args, "--dtype") or "auto", shape.dtype_bytes)
    if fmt == profiles.FP8 and profiles.PROFILES[profile].weights == profiles.BF16:
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
    candidates = [s.profile]
    if s.profile in ("plain", "latency"):
        candidates.append("default")  # the same bf16 weights, half the KV cache
    if s.device == "cuda":
        candidates += [p for p in ("fp8", "awq") if p != s.profile]

    def need(p: str, t: int) -> Need:
        return model_memory_need(s, shape, p, t, quant if p == s.profile else None)

    tps = [tp] + [t for t in (2, 4, 8) if tp < t <= n_gpus and shape.kv_heads % t == 0]
    for t in tps:
        for p in candidates:
            if need(p, t).tokens(total_mib, util) >= length:
                out = {}
                if p != s.profile:
                    out["SERVE_PROFILE"] = p
                if t != tp:
                    out.update(TENSOR_PARALLEL_SIZE=str(t), GPU_COUNT=str(t))
                return out, f"fits with {_profile_names(need(p, t))} on {t} GPU(s)"
    # shorter sequences: the profile that holds the most tokens on the current TP
    best = max(candidates, key=lambda p: need(p, tp).tokens(total_mib, util))
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
