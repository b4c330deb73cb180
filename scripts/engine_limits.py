"""The Docker engine's open-files limit for containers (stdlib only; runs on the host).

    python3 -m scripts.engine_limits          # one line: status, what was measured, the fix
    python3 -m scripts.engine_limits --json

compose.yaml asks for no `ulimits` on vllm: the container gets the engine's own limit, and vLLM
raises its soft limit to 65535 when the hard limit allows (vllm.utils set_ulimit). Where the hard
limit is lower (rootless Docker, Docker in Docker, a LimitNOFILE on the engine's systemd units),
vLLM starts anyway with the engine's limit and logs "Found ulimit of N and failed to
automatically increase"; a fixed `ulimits: nofile: 65535` would instead stop the container with
runc's "error setting rlimit type 7: operation not permitted".

The limit is measured where it applies, in a throw-away container (`docker run --rm --pull never
--network none`, about a second): the stack's image when it is local, else another local image
with a shell. Nothing is pulled or built. `check()` is the doctor's row; pass it the doctor's
`Host.run` to use a recorded host.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

from scripts.stack.settings import BY_NAME

OK, WARN = "OK", "WARN"
NAME = "nofile limit"
TARGET = 65535  # vLLM's own target for its soft limit (vllm.utils set_ulimit)
UNLIMITED = 1 << 62
PROBE = "ulimit -Sn; ulimit -Hn"
FIX = (
    "raise the engine's limit: `sudo systemctl edit containerd.service` and `sudo systemctl edit "
    "docker.service`, add `[Service]` and `LimitNOFILE=1048576` to each, then `sudo systemctl "
    "restart containerd docker` (rootless Docker: `systemctl --user edit docker.service`, same "
    "lines; Docker in Docker: start the outer container with `--ulimit nofile=1048576`). Until "
    f"then the stack runs with the lower limit (vLLM warns at start); it wants {TARGET} open files "
    "under many concurrent requests"
)
MEASURE_FIX = (
    "build the stack's image first (`docker compose build`), then run this check again; or look "
    "yourself: `docker run --rm IMAGE sh -c 'ulimit -Hn'`"
)

Run = Callable[[Sequence[str], float], tuple[int, str, str]]


def run_command(argv: Sequence[str], timeout: float = 30) -> tuple[int, str, str]:
    """The doctor's Host.run contract: (exit status, stdout, stderr); 127 when not runnable."""
    try:
        r = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as e:
        return 127, "", str(e)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer within {timeout:.0f}s"
    return r.returncode, r.stdout, r.stderr


def parse_limit(text: str) -> int:
    """One `ulimit -n` answer: a whole number or `unlimited`."""
    text = text.strip()
    if text == "unlimited":
        return UNLIMITED
    if not text.isdigit():
        raise ValueError(f"not a limit: {text!r}")
    return int(text)


def shown(n: int) -> str:
    return "unlimited" if n >= UNLIMITED else str(n)


def candidate_images(run: Run, preferred: Sequence[str]) -> list[str]:
    """The preferred images first (the stack's), then every other local image, newest first."""
    rc, out, _ = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], 30)
    local = [ln.strip() for ln in out.splitlines() if ln.strip() and "<none>" not in ln]
    if rc != 0:
        local = []
    first = [i for i in preferred if i in local]
    return first + [i for i in local if i not in first]


def measure(run: Run = run_command, preferred: Sequence[str] = (), tries: int = 3):
    """(soft, hard, image) of a container's RLIMIT_NOFILE on this engine, or (None, None, why)."""
    images = candidate_images(run, preferred)
    if not images:
        return None, None, "no local image to measure with (nothing is pulled)"
    why = ""
    for image in images[:tries]:
        rc, out, err = run(
            ["docker", "run", "--rm", "--pull", "never", "--network", "none",
             "--entrypoint", "sh", image, "-c", PROBE],
            60,
        )  # fmt: skip
        lines = out.split()
        if rc == 0 and len(lines) == 2:
            try:
                return parse_limit(lines[0]), parse_limit(lines[1]), image
            except ValueError:
                pass
        why = f"`docker run {image} sh -c '{PROBE}'` failed: {(err or out).strip()[-200:]}"
    return None, None, why


def verdict(soft: int | None, hard: int | None, how: str) -> tuple[str, str, str]:
    """(status, detail, fix) for the doctor's table."""
    if hard is None:
        return WARN, f"could not measure the containers' open-files limit: {how}", MEASURE_FIX
    where = f"(measured in a container of {how})"
    if hard >= TARGET:
        return OK, f"containers may open {shown(hard)} files; vLLM takes {TARGET} {where}", ""
    return (
        WARN,
        f"the engine's hard limit for open files is {shown(hard)} (soft {shown(soft)}) < {TARGET} "
        f"{where}: vLLM starts with {shown(hard)} and warns 'Found ulimit of ...'; many "
        "concurrent requests may hit 'Too many open files'",
        FIX,
    )


def stack_images(track: str | None = None, environ=os.environ) -> list[str]:
    """The image compose.yaml names (qwen3-vllm-stack:TRACK), then the CPU one."""
    track = track or environ.get("TRACK") or BY_NAME["TRACK"].default
    return [f"qwen3-vllm-stack:{track}", "qwen3-vllm-stack:cpu"]


def check(run: Run = run_command, preferred: Sequence[str] | None = None) -> tuple[str, str, str]:
    """The doctor's row for NAME: measure, then judge."""
    soft, hard, how = measure(run, stack_images() if preferred is None else preferred)
    return verdict(soft, hard, how)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m scripts.engine_limits",
        description="The Docker engine's open-files limit for containers, and the fix when low.",
    )
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args(argv)
    soft, hard, how = measure(run_command, stack_images())
    status, detail, fix = verdict(soft, hard, how)
    if opts.json:
        doc = {"check": NAME, "status": status, "soft": soft, "hard": hard, "detail": detail}
        print(json.dumps({**doc, "fix": fix}))
    else:
        print(f"{NAME}: {status}: {detail}" + (f"\n  fix: {fix}" if fix else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
