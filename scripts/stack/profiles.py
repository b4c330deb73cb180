"""The serving profiles and the checkpoint formats they serve: what each SERVE_PROFILE means, in
this one place. The settings registry takes its choices from PROFILES, the vLLM argument builder
its flags, download the repo, serve and doctor the weight format, the memory estimate its bytes.

Flags were chosen from the H100 measurements in bench/results/ (bench/README.md explains each
choice). `plain` adds nothing: it is the baseline that `vllm serve` gives with its defaults. Flags
are GPU only: on the CPU build the bf16 profiles serve like `plain` (and fp8/awq are refused).

`fp8` and `awq` serve Qwen's own quantized checkpoints instead of quantizing at start: vLLM reads
the checkpoint's `quantization_config` (no `--quantization` flag: with one that differs from the
checkpoint's, vLLM refuses to start; without one it picks the kernel itself, on a GPU with Marlin
support AWQ runs on Marlin: `awq_marlin` in vLLM 0.19, `auto_awq` + Marlin in 0.26).
`quantization_config` is what those repos' config.json say (huggingface.co/Qwen/Qwen3-8B-FP8 and
/Qwen/Qwen3-8B-AWQ, blob/main/config.json; the same on ModelScope). The keys are the formats'
own: DeepSeek-V3's block-wise fp8 (README_WEIGHTS.md: activation_scheme, fmt e4m3,
weight_block_size [128, 128]) and AutoAWQ's (transformers docs, quantization/awq: bits,
group_size, zero_point, version gemm). bench/shapes.py writes them into the `qwen3-8b-shape`
variants and tests/check_vllm_args.py has vLLM's own ModelConfig read them back.

Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BF16, FP8, AWQ = "bf16", "fp8", "awq"  # weight formats: unquantized, block-wise fp8, 4-bit AWQ
FORMAT_NAMES = {BF16: "unquantized (bf16) weights", FP8: "an FP8 checkpoint",
                AWQ: "an AWQ (4-bit) checkpoint"}  # fmt: skip


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


def base_id(model_id: str) -> str:
    """MODEL_ID without a quantized-checkpoint suffix (Qwen/Qwen3-8B-AWQ -> Qwen/Qwen3-8B)."""
    for p in PROFILES.values():
        if p.repo_suffix and model_id.lower().endswith(p.repo_suffix.lower()):
            return model_id[: -len(p.repo_suffix)]
    return model_id


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


def quant_config(fmt: str) -> Mapping:
    """The quantization_config the profile of this weight format declares."""
    for p in PROFILES.values():
        if p.weights == fmt and p.quantization_config is not None:
            return p.quantization_config
    raise ValueError(f"no profile serves {fmt!r} weights")
