"""Running a program and reading its answer, the one way every host-side command does it:
(exit status, stdout, stderr), with 127 for a missing program, 124 for a timeout and 126 for one
that cannot start, instead of exceptions. Standard library only."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Result = tuple[int, str, str]  # exit status, stdout, stderr
Run = Callable[..., Result]  # run(argv, timeout, *, env=None, cwd=None, stdin=None)


def run(
    argv: Sequence[str],
    timeout: float = 30,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> Result:
    """Run a program: (exit status, stdout, stderr); 127 when it is missing, 124 on timeout.
    `env` is the whole environment it gets."""
    exe = shutil.which(argv[0])
    if exe is None:
        return 127, "", f"{argv[0]}: command not found"
    try:
        r = subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=timeout,
            env=None if env is None else dict(env), cwd=cwd, input=stdin,
        )  # fmt: skip
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer within {timeout:.0f}s"
    except OSError as e:
        return 126, "", f"{argv[0]}: {e.strerror}"
    return r.returncode, r.stdout, r.stderr
