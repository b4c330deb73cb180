"""Ask Compose what it makes of the settings instead of imitating it. Two questions, both
answered without a Docker engine:

  docker compose -f - config --environment   the variables Compose interpolates with: .env under
                                             the process environment (an empty project on stdin,
                                             so a bad value in .env cannot hide the others)
  docker compose config --format json        the project as `up` would run it (COMPOSE_FILE,
                                             profiles, every file merged): what each service gets

When Compose is missing or cannot read .env, the variables are the process environment alone
(`Project.source` says so); when it cannot resolve the project, `config` is None and `error` holds
its own words. doctor and scripts/k8s.py read the settings through `ask`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scripts.doctor.host import Host
from scripts.settings import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "qwen3-vllm-stack"  # compose.yaml's `name:`, for when Compose cannot say
CPU_FILES = ("compose.yaml", "compose.cpu.yaml")  # SERVE_DEVICE=cpu: the stack with the override
EMPTY_PROJECT = "services: {}\n"


@dataclass(frozen=True)
class Project:
    variables: dict[str, str]  # what Compose interpolates with
    config: dict | None = None  # `docker compose config --format json`; None: not resolved
    version: tuple[int, str, str] = (127, "", "not asked")  # `docker compose version --short`
    missing: str = ""  # why Compose did not run at all ("" when it did)
    error: str = ""  # Compose's own words when it could not read .env or resolve the project
    env_read: bool = True  # False: the variables are the process environment only

    @property
    def source(self) -> str:
        """Where the settings came from, for the settings row ("" when from Compose)."""
        if not self.env_read:
            return "from the process environment only: .env not read"
        if self.config is None:
            return "read from .env and the environment: Compose could not resolve the services"
        return ""

    def service_env(self, service: str) -> dict[str, str | None] | None:
        """The environment Compose gives a service (None: unset); None when not resolved."""
        if self.config is None:
            return None
        return dict(self.config.get("services", {}).get(service, {}).get("environment") or {})

    def value(self, name: str, service: str | None = None) -> str:
        """A setting as a service gets it (or as Compose interpolates it), else its registry
        default; the variables stand in for the service when the project is not resolved."""
        env = self.service_env(service) if service else None
        raw = (env if env is not None else self.variables).get(name)
        return (raw or "").strip() or BY_NAME[name].default

    def build_arg(self, service: str, name: str) -> str | None:
        if self.config is None:
            return None
        build = self.config.get("services", {}).get(service, {}).get("build") or {}
        return (build.get("args") or {}).get(name)

    @property
    def project(self) -> str:
        if self.config and self.config.get("name"):
            return self.config["name"]
        return self.variables.get("COMPOSE_PROJECT_NAME") or PROJECT

    def volume(self, key: str) -> str:
        """A named volume's Docker name (`models` -> qwen3-vllm-stack_models)."""
        named = ((self.config or {}).get("volumes") or {}).get(key) or {}
        return named.get("name") or f"{self.project}_{key}"

    def secret_file(self, key: str, setting: str) -> str:
        """The host file a secret is read from: Compose's resolved path, else the setting as
        written (relative to the repo root)."""
        secret = ((self.config or {}).get("secrets") or {}).get(key) or {}
        return secret.get("file") or self.value(setting)

    def published(self, service: str) -> tuple[str, str] | None:
        """(host address, port) of a service's first published port; None when not resolved."""
        if self.config is None:
            return None
        ports = self.config.get("services", {}).get(service, {}).get("ports") or [{}]
        return ports[0].get("host_ip") or "0.0.0.0", str(ports[0].get("published") or "")


def _words(rc: int, out: str, err: str) -> str:
    """Compose's message on one line."""
    return " ".join((err or out).split())[:400] or f"exit status {rc}"


def parse_environment(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name] = value
    return out


def ask(host: Host, environ: Mapping[str, str], env_file: Path, services: bool = True) -> Project:
    """Compose's answers for this environment and env file (see the module's docstring);
    services=False: the variables only."""
    compose = ["docker", "compose"]
    version = host.run([*compose, "version", "--short"])
    if version[0] != 0:
        why = _words(*version).split(". ")[0]
        return Project(dict(environ), version=version, missing=why, env_read=False)
    # a missing env file means no .env (Compose's own --env-file would refuse it)
    base = [*compose, "--env-file", str(env_file) if env_file.exists() else os.devnull]
    run = {"env": environ, "cwd": ROOT}
    variables_only = [*base, "-f", "-", "config", "--environment"]
    rc, out, err = host.run(variables_only, stdin=EMPTY_PROJECT, **run)
    if rc != 0:
        return Project(dict(environ), version=version, error=_words(rc, out, err), env_read=False)
    variables = parse_environment(out)
    if not services:
        return Project(variables, version=version)
    files: list[str] = []
    if variables.get("SERVE_DEVICE") == "cpu" and not variables.get("COMPOSE_FILE"):
        files = [a for f in CPU_FILES for a in ("-f", f)]  # what a CPU host runs
    rc, out, err = host.run([*base, *files, "config", "--format", "json"], **run)
    try:
        config = json.loads(out) if rc == 0 else None
    except ValueError:
        config, rc = None, 1
    if config is None:
        return Project(variables, version=version, error=_words(rc, out, err))
    return Project(variables, config, version=version)
