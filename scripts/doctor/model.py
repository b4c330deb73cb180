"""Model steps: MAX_MODEL_LEN and TENSOR_PARALLEL_SIZE against the model's config. An invalid
value is its own row (the other steps judged the default in its place)."""

from __future__ import annotations

from scripts.checks import memory
from scripts.checks.row import Row
from scripts.doctor.facts import Facts
from scripts.doctor.settings_row import carried
from scripts.stack import model


def _shape(f: Facts) -> model.ModelShape | None:
    try:
        return f.shape()
    except Exception:  # the GPU and disk rows report the crash, if it is one
        return None


def max_len(f: Facts) -> Row:
    return carried("MAX_MODEL_LEN", "MAX_MODEL_LEN", f.bad) or memory.check_max_len(f.s, _shape(f))


def tp_heads(f: Facts) -> Row:
    return carried("TENSOR_PARALLEL_SIZE", "TENSOR_PARALLEL_SIZE", f.bad) or memory.check_tp_heads(
        f.s, _shape(f)
    )
