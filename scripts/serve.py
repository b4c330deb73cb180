"""Start vLLM's OpenAI-compatible server from the settings. The argument list comes from
`scripts/stack/vllm_args.py` (the one place that builds it); this is the container's entry point.

    python -m scripts.serve            # validate, check the weights' folder and format, exec vLLM
    python -m scripts.serve --print    # print the command instead of running it

On a host (no settings in the environment: compose gives every container SERVE_DEVICE), `--print`
prints the command the vllm container would run for the settings in .env: Compose's view of the
vllm service, the vLLM of the track's lock; and says what it could not check there.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

from scripts.stack import manifest
from scripts.stack.compose import Compose, ComposeError
from scripts.stack.env import HostEnv, settings_env
from scripts.stack.settings import Settings, SettingsError, load
from scripts.stack.vllm_args import Engine, checkpoint_problem, command

ROOT = Path(__file__).resolve().parent.parent  # holds scripts/: vLLM imports the middleware


def parser_names(kind: str) -> list[str] | None:
    """The tool-call (`tool`) or reasoning (`reasoning`) parsers the installed vLLM registers;
    None when this vLLM keeps them elsewhere (then vLLM itself checks the name at start-up)."""
    paths = {
        "tool": [("vllm.tool_parsers", "ToolParserManager"),  # vLLM >= 0.3x
                 ("vllm.entrypoints.openai.tool_parsers", "ToolParserManager")],
        "reasoning": [("vllm.reasoning", "ReasoningParserManager")],
    }[kind]  # fmt: skip
    for module, name in paths:
        try:
            manager = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if hasattr(manager, "list_registered"):
            return list(manager.list_registered())
        found = set(getattr(manager, f"{kind}_parsers", {})) | set(
            getattr(manager, "lazy_parsers", {})
        )
        return sorted(found) or None
    return None


def check_parsers(s: Settings) -> list[str]:
    """TOOL_CALL_PARSER and REASONING_PARSER against this vLLM's parsers, one line each."""
    problems, defaults = [], Settings()
    for setting, attr, kind in (
        ("TOOL_CALL_PARSER", "tool_call_parser", "tool"),
        ("REASONING_PARSER", "reasoning_parser", "reasoning"),
    ):
        value = getattr(s, attr)
        names = parser_names(kind) if value else None
        if names is not None and value not in names:
            from vllm import __version__ as version

            problems.append(
                f"{setting}={value!r} is not a {kind} parser of vLLM {version}; Qwen3 uses "
                f"{getattr(defaults, attr)!r} (this vLLM has: {', '.join(names)}), or empty to "
                "disable; fix it in .env"
            )
    return problems


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


def print_for_host() -> int:
    """The vllm container's command for this checkout's settings (Compose: COMPOSE_FILE, the
    environment over .env), built for the vLLM its track installs."""
    try:
        env = HostEnv.read()
        typos = list(env.file.typos().values())
        if typos:
            raise SettingsError(typos[0])
        vllm = Compose().config()["services"]["vllm"]
        given = settings_env(env.variables, vllm.get("environment"))
        s = load({k: v for k, v in given.items() if v is not None})
        track = ((vllm.get("build") or {}).get("args") or {}).get("TRACK") or s.track
        engine = Engine.locked(track, ROOT)
    except (ComposeError, SettingsError, OSError) as e:
        print(f"serve: {e}".replace("invalid settings:\n  ", "").replace("\n  ", "; "),
              file=sys.stderr)  # fmt: skip
        return 2
    print(shlex.join(command(s, engine=engine)))
    print(
        f"serve: the vllm container's command (TRACK={track}, {engine.shown}); not checked on "
        f"this host: the download in the models volume, the GPUs and the driver (`python3 -m "
        f"scripts.doctor` checks both), the parser names against {engine.shown}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start vLLM from the settings in the environment")
    ap.add_argument("--print", action="store_true", help="print the command and exit")
    opts = ap.parse_args(argv)
    if opts.print and "SERVE_DEVICE" not in os.environ:
        return print_for_host()
    try:
        s = load()
        key = s.resolved_api_key()
        if s.load_format != "dummy":
            manifest.require_complete(s.model_path)
    except (SettingsError, manifest.NotReady) as e:
        said = getattr(e, "problems", None) or {"": str(e)}  # one line per invalid setting
        print("\n".join(f"serve: {line}" for line in said.values()), file=sys.stderr)
        return 2
    if problem := checkpoint_problem(s):  # e.g. SERVE_PROFILE=awq on a bf16 folder
        print(f"serve: {problem}", file=sys.stderr)
        return 2
    cmd = command(s)
    if opts.print:
        print(shlex.join(cmd))
        return 0
    problems = check_parsers(s)
    if problems:
        print("serve: " + "\nserve: ".join(problems), file=sys.stderr)
        return 2
    if s.device == "cuda" and s.preflight:
        from scripts.checks import container

        if not container.container_check(s, os.environ, lambda m: print(m, file=sys.stderr)):
            return 2
    raise_open_files()
    env = dict(os.environ)
    env.pop("VLLM_API_KEY", None)
    # vLLM's own cap on `n` is 16384 choices per request: one request could fill the GPU
    env["VLLM_MAX_N_SEQUENCES"] = str(s.max_n)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if key:
        env["VLLM_API_KEY"] = key  # vLLM reads it from the environment: never on the command line
    print(f"serve: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
