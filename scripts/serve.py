"""Start vLLM's OpenAI-compatible server from the settings. The argument list comes from
`scripts/vllm_args.py` (the one place that builds it); this is the container's entry point.

    python -m scripts.serve            # validate, check the weights' folder and format, exec vLLM
    python -m scripts.serve --print    # print the command instead of running it
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from scripts import manifest
from scripts.settings import SettingsError, load
from scripts.vllm_args import checkpoint_problem, command

OPEN_FILES = 65535  # what vLLM sets itself when the hard limit allows (vllm.utils set_ulimit)


def raise_open_files() -> None:
    """Take as many open files as the engine allows: vLLM only tries 65535 and otherwise keeps
    the soft limit, which may be lower than a hard limit below 65535 (compose.yaml sets no
    ulimits; scripts/engine_limits.py explains)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        print(f"serve: open files {soft} -> {want} (hard limit {hard})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start vLLM from the settings in the environment")
    ap.add_argument("--print", action="store_true", help="print the command and exit")
    opts = ap.parse_args(argv)
    try:
        s = load()
        key = s.resolved_api_key()
        if s.load_format != "dummy":
            manifest.require_complete(s.model_path)
    except (SettingsError, manifest.NotReady) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 2
    if problem := checkpoint_problem(s):  # e.g. SERVE_PROFILE=awq on a bf16 folder
        print(f"serve: {problem}", file=sys.stderr)
        return 2
    cmd = command(s)
    if opts.print:
        print(shlex.join(cmd))
        return 0
    if s.device == "cuda" and s.preflight:
        from scripts import preflight  # GPU memory, count and driver against the settings

        if not preflight.container_check(s, os.environ, lambda m: print(m, file=sys.stderr)):
            return 2
    raise_open_files()
    env = dict(os.environ)
    env.pop("VLLM_API_KEY", None)
    # vLLM's own cap on `n` is 16384 choices per request: one request could fill the GPU
    env["VLLM_MAX_N_SEQUENCES"] = str(s.max_n)
    if key:
        env["VLLM_API_KEY"] = key  # vLLM reads it from the environment: never on the command line
    print(f"serve: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
