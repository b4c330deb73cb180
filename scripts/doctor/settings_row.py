"""The settings step: every setting validated by scripts/stack/settings.py where its reader gets it.
The names the vllm service gets come from the environment Compose resolves for it; every other
setting (Compose's own, the gateway's, the hub's, the router's) from Compose's variables. The
other steps go on with the default in place of each invalid value, so one typo does not hide
every other problem; the rows about one setting carry its own message (`carried`)."""

from __future__ import annotations

from collections.abc import Mapping

from scripts.checks.row import FAIL, OK, Row
from scripts.stack.compose import Project
from scripts.stack.settings import (
    BY_NAME,
    CONTAINER,
    SETTINGS,
    Settings,
    SettingsError,
    load,
    problems,
)

NAME = "settings"
FIX_VALUES = "correct the values named in .env (see .env.example)"


def settings_env(p: Project) -> dict[str, str | None]:
    """The value of each setting where it is read. Without Compose's services, the variables
    stand in for what Compose would pass the vllm service by name."""
    vllm = p.service_env("vllm")
    if vllm is None:
        vllm = {s.name: p.variables[s.name] for s in SETTINGS if s.scope == CONTAINER
                if s.name in p.variables}  # fmt: skip
    # not the host path API_KEY_FILE: the containers get Compose's secret instead
    host_side = {
        s.name: p.variables[s.name] for s in SETTINGS
        if s.scope != CONTAINER and s.container_default is not None and s.name in p.variables
    }  # fmt: skip
    return {**host_side, **vllm}


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


def read(p: Project) -> tuple[Settings, dict[str, str], Row]:
    """(settings in place, invalid values by name, the settings row)."""
    env = settings_env(p)
    bad = problems(env, tuple(s.name for s in SETTINGS if s.name in env))
    s = in_place(env, bad)
    said = [f"Compose: {p.error}"] if p.error else []
    detail = "; ".join([*said, *bad.values(), *([p.source] if p.source else [])])
    if p.error and not p.env_read:
        return s, bad, Row(NAME, FAIL, detail, "fix that line of .env (KEY=VALUE)")
    if p.error or bad:
        return s, bad, Row(NAME, FAIL, detail, FIX_VALUES)
    ok = "valid (scripts/stack/settings.py)" + (f"; {p.source}" if p.source else "")
    return s, bad, Row(NAME, OK, ok)


def carried(check: str, name: str, bad: Mapping[str, str], fix: str = "") -> Row | None:
    """A FAIL row about one setting with its own message, when it is invalid (the step then
    judged the default in its place); None when it is valid."""
    if name not in bad:
        return None
    fix = fix or f"{name}={BY_NAME[name].default} in .env (the default), or a value it allows"
    return Row(check, FAIL, bad[name], fix)
