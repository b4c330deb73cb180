"""One check's verdict, the row doctor prints and serve's preflight says: shared by every check."""

from __future__ import annotations

from dataclasses import dataclass, field

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Row:
    """One check's verdict. `fix` is a command or .env line; `suggest` holds .env settings that
    make a FAIL go away (the doctor prints them as a "Suggested .env" block)."""

    check: str
    status: str
    detail: str
    fix: str = ""
    suggest: dict[str, str] = field(default_factory=dict)
