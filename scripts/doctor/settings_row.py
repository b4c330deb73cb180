"""The settings step: every setting validated by scripts/stack/settings.py where its reader gets it.
The names the vllm service gets come from the environment Compose resolves for it; every other
setting (Compose's own, the gateway's, the hub's, the router's) from Compose's variables. The
other steps go on with the default in place of each invalid value, so one typo does not hide
every other problem; the rows about one setting carry its own message (`carried`)."""

from __future__ import annotations

from collections.abc import Mapping

from scripts.checks.row import FAIL, OK, Row
from scripts.stack.compose import INSTALL, Project
from scripts.stack.env import EnvFile, settings_env
from scripts.stack.settings import (
    BY_NAME,
    SETTINGS,
    Settings,
    SettingsError,
    load,
    problems,
)

NAME = "settings"
FIX_VALUES = "correct the values named in .env (see .env.example)"


def in_place(env: Mapping[str, str | None], bad: dict[str, str]) -> Settings:
    """The settings the other steps use: each invalid value replaced by its default (an invalid
    GPU_COUNT by one replica, TENSOR_PARALLEL_SIZE GPUs); values that do not go together are
    added to `bad`."""
    for _ in range(len(SETTINGS)):
        rest = {k: v for k, v in env.items() if k not in bad}
        if "GPU_COUNT" in bad:
            rest["GPU_COUNT"] = rest.get("TENSOR_PARALLEL_SIZE")
        try:
            return load(rest)
        except SettingsError as e:
            new = {k: v for k, v in e.problems.items() if k not in bad}
            if not new:
                break
            bad.update(new)
    return Settings()


def read(p: Project, file: EnvFile | None = None) -> tuple[Settings, dict[str, str], Row]:
    """(settings in place, invalid values by name, the settings row). `file`: what the .env file
    defines (None: there is none), for the line of a quote that never closes (Compose names the
    end of the file) and for names that are no setting."""
    env = settings_env(p.variables, p.service_env("vllm"))
    bad = problems(env, tuple(s.name for s in SETTINGS if s.name in env))
    s = in_place(env, bad)
    error = f".env {file.error}" if file and file.error and p.error else p.error
    said = [f"Compose: {error}"] if error else []
    typos = list(file.typos().values()) if file else []
    others = [v for k, v in file.unknown().items() if v not in typos] if file else []
    detail = "; ".join([*said, *bad.values(), *typos, *([p.source] if p.source else [])])
    if p.missing and file is not None:  # a .env that nobody reads: never go on with defaults
        return s, bad, Row(NAME, FAIL, f"{detail}: the Compose plugin is missing", INSTALL)
    if error and not p.env_read:
        return s, bad, Row(NAME, FAIL, detail, "fix that line of .env (KEY=VALUE)")
    if error or bad or typos:
        return s, bad, Row(NAME, FAIL, detail, FIX_VALUES)
    ok = "; ".join(["valid (scripts/stack/settings.py)", *([p.source] if p.source else []),
                    *others])  # fmt: skip
    return s, bad, Row(NAME, OK, ok)


def carried(check: str, name: str, bad: Mapping[str, str], fix: str = "") -> Row | None:
    """A FAIL row about one setting with its own message, when it is invalid (the step then
    judged the default in its place); None when it is valid."""
    if name not in bad:
        return None
    fix = fix or f"{name}={BY_NAME[name].default} in .env (the default), or a value it allows"
    return Row(check, FAIL, bad[name], fix)
