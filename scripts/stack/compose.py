"""The one Compose client: every host-side command asks Compose what it makes of the stack instead
of imitating it (doctor, replicas, k8s, ci_job). Three questions, none needs a Docker engine:

  docker compose -f - config --environment   the variables Compose interpolates with: .env under
                                             the process environment (an empty project on stdin,
                                             so a bad value in .env cannot hide the others)
  docker compose config --format json        the project as `up` would run it (COMPOSE_FILE,
                                             profiles, every file merged): what each service gets
  ... config --no-interpolate --format json  the same with ${VARIABLES} as written

`Compose` runs them (through any `run` with Host.run's signature: doctor's tests pass recordings)
and raises ComposeError, whose str() is one line naming the fix. `ask` gathers the answers into a
`Project`, which says where the settings came from when Compose is missing or refuses .env.
Standard library only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.stack.proc import Result, Run, run
from scripts.stack.settings import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "qwen3-vllm-stack"  # compose.yaml's `name:`, for when Compose cannot say
CPU_FILES = ("compose.yaml", "compose.cpu.yaml")  # SERVE_DEVICE=cpu: the stack with the override
EMPTY_PROJECT = "services: {}\n"
# the oldest Compose the files work with: depends_on.required and the !reset tag
# (compose.cpu.yaml) came in 2.24.4
MIN_VERSION = (2, 24, 4)
MIN_SHOWN = ".".join(map(str, MIN_VERSION))
INSTALL_DOCKER = "install Docker Engine: https://docs.docker.com/engine/install/"
INSTALL = (
    f"install the Compose plugin >= {MIN_SHOWN}: `sudo apt-get install docker-compose-plugin` "
    "(Docker's apt repository) or put the docker-compose binary from "
    "https://github.com/docker/compose/releases into ~/.docker/cli-plugins/"
)


class ComposeError(Exception):
    """Compose is missing or refused the project; str() is one line with the fix."""


def words(rc: int, out: str, err: str) -> str:
    """Compose's message on one line."""
    return " ".join((err or out).split())[:400] or f"exit status {rc}"


def parse_version(raw: str) -> tuple[int, ...] | None:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", raw.strip())
    return tuple(int(g or 0) for g in m.groups()) if m else None


def parse_environment(text: str) -> dict[str, str]:
    """`config --environment`'s NAME=VALUE lines."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name] = value
    return out


@dataclass(frozen=True)
class Compose:
    """`docker compose` for this checkout. files: the -f files (none: Compose's own choice,
    COMPOSE_FILE or compose.yaml); env_file: --env-file (None: Compose's default, ./.env; a
    missing one means no .env); environ: the process environment Compose gets."""

    files: Sequence[str] = ()
    env_file: Path | None = None
    environ: Mapping[str, str] | None = None
    run: Run = field(default=run, repr=False)
    timeout: float = 60

    def argv(self, *args: str, files: Sequence[str] | None = None) -> list[str]:
        cmd = ["docker", "compose"]
        if self.env_file is not None:
            cmd += ["--env-file", str(self.env_file) if self.env_file.exists() else os.devnull]
        files = self.files if files is None else files
        return [*cmd, *(a for f in files for a in ("-f", f)), *args]

    def ask(self, *args: str, files: Sequence[str] | None = None, stdin: str | None = None
            ) -> Result:  # fmt: skip
        """(exit status, stdout, stderr) of `docker compose ARGS` in the checkout."""
        return self.run(self.argv(*args, files=files), self.timeout, env=self.environ, cwd=ROOT,
                        stdin=stdin)  # fmt: skip

    def call(self, *args: str, files: Sequence[str] | None = None, stdin: str | None = None) -> str:
        """stdout of `docker compose ARGS`; ComposeError with Compose's words when it fails."""
        rc, out, err = self.ask(*args, files=files, stdin=stdin)
        if rc != 0:
            self.require()  # a missing plugin is named as such, not by docker's usage text
            shown = " ".join(self.argv(*args, files=files)).replace(f" --env-file {os.devnull}", "")
            raise ComposeError(f"`{shown}` failed: {words(rc, out, err)[:300]}")
        return out

    def version(self) -> Result:
        """`docker compose version --short` as it answered."""
        return self.run(["docker", "compose", "version", "--short"], self.timeout,
                        env=self.environ)  # fmt: skip

    def require(self) -> str:
        """The plugin's version; ComposeError naming the install when it is missing or older
        than MIN_VERSION (Debian's docker-compose 1.29 is no `docker compose` plugin)."""
        rc, out, err = self.version()
        v = parse_version(out) if rc == 0 else None
        if rc == 127:
            raise ComposeError(f"the docker command is not installed; fix: {INSTALL_DOCKER}")
        if v is None:
            why = words(rc, out, err).split(". ")[0]
            raise ComposeError(f"the Docker Compose plugin is missing (`docker compose version`: "
                               f"{why}); fix: {INSTALL}")  # fmt: skip
        if v < MIN_VERSION:
            raise ComposeError(f"Docker Compose {out.strip()} is older than {MIN_SHOWN}; fix: "
                               f"{INSTALL}")  # fmt: skip
        return out.strip()

    def variables(self) -> dict[str, str]:
        """What Compose interpolates with: .env under the process environment."""
        return parse_environment(
            self.call("-f", "-", "config", "--environment", files=(), stdin=EMPTY_PROJECT)
        )

    def environment(self) -> dict[str, str]:
        """The same for these files (their own `env_file`s and `.env` under the environment)."""
        return parse_environment(self.call("config", "--environment"))

    def config(self, interpolate: bool = True) -> dict:
        """The merged project, as `up` would run it; `interpolate=False`: ${VARS} as written."""
        args = ["config", "--format", "json"] + ([] if interpolate else ["--no-interpolate"])
        try:
            return json.loads(self.call(*args))
        except ValueError as e:
            raise ComposeError(f"`docker compose config` printed no JSON ({e})") from None


def secret_settings(raw_config: Mapping) -> dict[str, str]:
    """Each top-level secret and the setting that names its file, from the project as written
    (`config(interpolate=False)`: `file: ${API_KEY_FILE:-./secrets/api_key}`)."""
    out = {}
    for name, secret in (raw_config.get("secrets") or {}).items():
        m = re.search(r"\$\{(\w+)", str((secret or {}).get("file") or ""))
        if m:
            out[name] = m.group(1)
    return out


@dataclass(frozen=True)
class Project:
    variables: dict[str, str]  # what Compose interpolates with
    config: dict | None = None  # `docker compose config --format json`; None: not resolved
    version: Result = (127, "", "not asked")  # `docker compose version --short`
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


def ask(compose: Compose, services: bool = True) -> Project:
    """Compose's answers (see the module's docstring); services=False: the variables only."""
    environ = dict(os.environ if compose.environ is None else compose.environ)
    version = compose.version()
    if version[0] != 0:
        why = words(*version).split(". ")[0]
        return Project(environ, version=version, missing=why, env_read=False)
    rc, out, err = compose.ask("-f", "-", "config", "--environment", files=(), stdin=EMPTY_PROJECT)
    if rc != 0:
        return Project(environ, version=version, error=words(rc, out, err), env_read=False)
    variables = parse_environment(out)
    if not services:
        return Project(variables, version=version)
    files = compose.files
    if not files and variables.get("SERVE_DEVICE") == "cpu" and not variables.get("COMPOSE_FILE"):
        files = CPU_FILES  # what a CPU host runs
    rc, out, err = compose.ask("config", "--format", "json", files=files)
    try:
        config = json.loads(out) if rc == 0 else None
    except ValueError:
        config, rc = None, 1
    if config is None:
        return Project(variables, version=version, error=words(rc, out, err))
    return Project(variables, config, version=version)
