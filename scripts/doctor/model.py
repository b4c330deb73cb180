"""Model steps: MAX_MODEL_LEN and TENSOR_PARALLEL_SIZE against the model's config. An invalid
value is its own row (the other steps judged the default in its place)."""

from __future__ import annotations

from scripts import preflight
from scripts.doctor.host import Facts
from scripts.doctor.settings_row import carried
from scripts.preflight import Row


def _shape(f: Facts) -> preflight.ModelShape | None:
    try:
        return f.shape()
    except Exception:  # the GPU and disk rows report the crash, if it is one
        return None


def max_len(f: Facts) -> Row:
    return carried("MAX_MODEL_LEN", "MAX_MODEL_LEN", f.bad) or preflight.check_max_len(
        f.s, _shape(f)
    )


def tp_heads(f: Facts) -> Row:
    return carried(
        "TENSOR_PARALLEL_SIZE", "TENSOR_PARALLEL_SIZE", f.bad
    ) or preflight.check_tp_heads(f.s, _shape(f))
