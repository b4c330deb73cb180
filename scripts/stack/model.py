"""The numbers of the model that memory depends on: Qwen3-8B's own, or a downloaded config.json's,
and the bytes its weights take in each checkpoint format (scripts/stack/profiles.py).
Standard library only."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from scripts.stack import profiles
from scripts.stack.settings import Settings

CACHES_GB = 2.0  # torch.compile, Triton and FlashInfer caches on the `cache` volume


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
        """Bytes of the weights vLLM holds for a checkpoint of this format (profiles' BF16,
        FP8, AWQ). Quantized projections: fp8 block-wise is 1 byte a weight plus a float32
        scale per block (weight_block_size, e.g. 128 x 128); AWQ packs 4-bit weights 8 to an
        int32 plus, per group of group_size inputs and per output, an fp16 scale and a 4-bit
        zero point (8 to an int32). The rest stays in the checkpoint's dtype. `quant` is the
        checkpoint's quantization_config (the profile's declared one by default)."""
        b = self.dtype_bytes if dtype_bytes is None else dtype_bytes
        rest = self.other_params() * b
        if fmt == profiles.BF16:
            return self.linear_params() * b + rest
        q = dict(profiles.quant_config(fmt) if quant is None else quant)
        per_layer = 0
        if fmt == profiles.FP8:
            bo, bi = q.get("weight_block_size") or (0, 0)
            for o, i in self.linear_shapes():
                scales = math.ceil(o / bo) * math.ceil(i / bi) if bo and bi else 1
                per_layer += o * i + 4 * scales
        elif fmt == profiles.AWQ:
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


# Qwen3-8B's config.json (the same numbers as bench/standins.py's QWEN3_8B): 8.19e9
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
    profiles.checkpoint_id("Qwen/Qwen3-8B", name): QWEN3_8B for name in profiles.PROFILES
}


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
