"""The output: one table (CHECK | STATUS | DETAIL | FIX), the "Suggested .env" block, a
summary line, or all of it as JSON."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import asdict

from scripts.checks.row import FAIL, OK, WARN, Row


def table(rows: Sequence[Row], width: int = 120) -> str:
    heads = ("CHECK", "STATUS", "DETAIL", "FIX")
    w0 = max(len(heads[0]), *(len(r.check) for r in rows))
    w1 = 6
    rest = max(50, width - w0 - w1 - 6)
    w2 = rest * 11 // 20
    w3 = rest - w2
    lines = [f"{heads[0]:<{w0}}  {heads[1]:<{w1}}  {heads[2]:<{w2}}  {heads[3]}"]
    lines.append(f"{'-' * w0}  {'-' * w1}  {'-' * w2}  {'-' * w3}")
    for r in rows:
        detail = textwrap.wrap(r.detail, w2, break_long_words=False, break_on_hyphens=False) or [""]
        fix = (
            textwrap.wrap(r.fix, w3, break_long_words=False, break_on_hyphens=False)
            if r.status != OK
            else []
        )
        for i in range(max(len(detail), len(fix))):
            c0, c1 = (r.check, r.status) if i == 0 else ("", "")
            d = detail[i] if i < len(detail) else ""
            x = fix[i] if i < len(fix) else ""
            lines.append(f"{c0:<{w0}}  {c1:<{w1}}  {d:<{w2}}  {x}".rstrip())
    return "\n".join(lines)


def suggestions(rows: Sequence[Row]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in rows:
        if r.status == FAIL:
            out.update(r.suggest)
    return out


def summary(rows: Sequence[Row]) -> str:
    n = {st: sum(r.status == st for r in rows) for st in (OK, WARN, FAIL)}
    counts = f"{n[OK]} OK, {n[WARN]} WARN, {n[FAIL]} FAIL"
    if n[FAIL]:
        return f"doctor: {counts}: fix the FAIL rows before `docker compose up`"
    return f"doctor: {counts}: ready for `docker compose up --build`"


def failed(rows: Sequence[Row]) -> int:
    """The exit status: 1 when any row FAILs."""
    return int(any(r.status == FAIL for r in rows))


def as_json(rows: Sequence[Row]) -> str:
    doc = {
        "rows": [asdict(r) for r in rows],
        "suggested_env": suggestions(rows),
        "summary": summary(rows),
        "exit": failed(rows),
    }
    return json.dumps(doc, indent=1, ensure_ascii=False)


def as_text(rows: Sequence[Row], width: int) -> str:
    out = [table(rows, width)]
    env = suggestions(rows)
    if env:
        out.append("\nSuggested .env (set these lines in .env):")
        out.append("\n".join(f"{k}={v}" for k, v in env.items()))
    out.append("\n" + summary(rows))
    return "\n".join(out)
