"""`python3 -m scripts.doctor [--json] [--env-file FILE]`."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from scripts.checks.row import FAIL, Row
from scripts.doctor import report
from scripts.doctor.host import Host
from scripts.doctor.steps import collect
from scripts.stack.compose import ROOT


def main(argv: list[str] | None = None, host: Host | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m scripts.doctor",
        description="Check this host for the qwen3-vllm-stack before `docker compose up`.",
    )
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--env-file", type=Path, default=ROOT / ".env", help="default: ./.env")
    opts = ap.parse_args(argv)
    try:
        rows = collect(host or Host(), os.environ, opts.env_file)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug in a step must still give a row, never a traceback
        rows = [Row("doctor", FAIL, f"internal error: {type(e).__name__}: {e}",
                    "report it with the output of `python3 -m scripts.doctor`")]  # fmt: skip
    if opts.json:
        print(report.as_json(rows))
    else:
        print(report.as_text(rows, shutil.get_terminal_size((120, 24)).columns))
    return report.failed(rows)
