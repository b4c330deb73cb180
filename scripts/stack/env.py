"""The settings in effect on a host, read the way Compose reads them: the shell environment over
`.env` over the registry's defaults. Compose itself gives the values (scripts/stack/compose.py),
so quoting, `export`, comments and `${VAR:-default}` follow its rules; this module adds what
Compose does not say: where each value came from (the environment, `.env` line N, the default),
names in `.env` that are not settings (with the nearest one: a typo is not ignored silently),
and the line of a quote that never closes (Compose names the end of the file instead).

Without the Compose plugin nothing is guessed: `HostEnv.read` raises ComposeError naming the
plugin and its install. Standard library only.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts.stack.compose import ROOT, Compose, ComposeError
from scripts.stack.settings import BY_NAME, CONTAINER, SETTINGS

SECRET = ("VLLM_API_KEY", "HF_TOKEN")  # shown as *** wherever settings are printed
# names that belong to Compose, Docker or the GPU runtime, not to the stack, but are at home in .env
FOREIGN = re.compile(r"(COMPOSE|DOCKER|BUILDKIT|NVIDIA|CUDA)_\w+|(HTTPS?|NO|ALL)_PROXY", re.I)
_NAME = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*")


@dataclass(frozen=True)
class EnvFile:
    """What a .env file defines: each name's (last) line, and the first line that Compose cannot
    read (an unclosed quote, a line without `=`), as `line N: why`."""

    lines: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def scan(cls, text: str) -> EnvFile:
        lines: dict[str, int] = {}
        rows = text.splitlines()
        i = 0
        while i < len(rows):
            row, n = rows[i], i + 1
            i += 1
            if not row.strip() or row.lstrip().startswith("#"):
                continue
            m = _NAME.match(row)
            if m is None:
                return cls(lines, f"line {n}: not NAME=VALUE: {row.strip()[:60]!r}")
            lines[m.group(1)] = n
            value = row[m.end() :]
            quote = value[:1]
            if quote not in ("'", '"'):
                continue
            rest = value[1:]
            while not _closes(rest, quote):  # a quoted value may go on over several lines
                if i >= len(rows):
                    return cls(lines, f"line {n}: {m.group(1)}'s {quote} quote never closes")
                rest, i = rows[i], i + 1
        return cls(lines)

    def unknown(self) -> dict[str, str]:
        """Each name that is no setting of the stack: NAME -> one line with the nearest setting
        when there is one (a typo), else what happens to it."""
        out = {}
        for name, n in self.lines.items():
            if name in BY_NAME or FOREIGN.fullmatch(name):
                continue
            near = difflib.get_close_matches(name, [s.name for s in SETTINGS], n=1, cutoff=0.75)
            out[name] = (
                f"{name} (.env line {n}) is not a setting; did you mean {near[0]}? fix it in .env"
                if near
                else f"{name} (.env line {n}) is not a setting of this stack: no service gets it"
            )
        return out

    def typos(self) -> dict[str, str]:
        """The unknown names that are near a setting: a misspelt setting is an error."""
        return {k: v for k, v in self.unknown().items() if "did you mean" in v}


def settings_env(
    variables: Mapping[str, str], vllm: Mapping[str, str | None] | None
) -> dict[str, str | None]:
    """The value of each setting where it is read: the names the vllm service gets, as Compose
    resolves its environment (`vllm`; the variables stand in for it when Compose could not
    resolve the services), every other setting (Compose's own, the gateway's, the hub's, the
    router's) from Compose's variables; not the host path API_KEY_FILE, for which the containers
    get Compose's secret instead."""
    if vllm is None:
        vllm = {s.name: variables[s.name] for s in SETTINGS
                if s.scope == CONTAINER and s.name in variables}  # fmt: skip
    host_side = {
        s.name: variables[s.name] for s in SETTINGS
        if s.scope != CONTAINER and s.container_default is not None and s.name in variables
    }  # fmt: skip
    return {**host_side, **vllm}


def _closes(text: str, quote: str) -> bool:
    """Does this (rest of a) line close a value opened with `quote`? (\\" does not, in "...")"""
    escaped = False
    for c in text:
        if quote == '"' and c == "\\" and not escaped:
            escaped = True
            continue
        if c == quote and not escaped:
            return True
        escaped = False
    return False


@dataclass(frozen=True)
class HostEnv:
    """The settings as Compose resolves them for this checkout, and where each came from."""

    variables: dict[str, str]  # what Compose interpolates with
    environ: Mapping[str, str]  # the process environment (over .env)
    env_file: Path  # the .env read ("" lines when it does not exist)
    file: EnvFile

    @classmethod
    def read(cls, compose: Compose | None = None) -> HostEnv:
        """Ask Compose; ComposeError (one line with the fix) when the plugin is missing, or a
        .env line is wrong (then the line is the one that is wrong, not where Compose stopped)."""
        compose = compose or Compose(env_file=ROOT / ".env")
        environ = os.environ if compose.environ is None else compose.environ
        # Compose's own order: --env-file, else COMPOSE_ENV_FILES (the first is scanned), else .env
        listed = [f for f in environ.get("COMPOSE_ENV_FILES", "").split(",") if f.strip()]
        env_file = compose.env_file or (Path(listed[0].strip()) if listed else ROOT / ".env")
        try:
            text = env_file.read_text()
        except OSError:
            text = ""
        file = EnvFile.scan(text)
        compose.require()
        if file.error:
            raise ComposeError(f"{env_file.name} {file.error}; fix that line (NAME=VALUE)")
        return cls(compose.variables(), environ, env_file, file)

    def source(self, name: str) -> str:
        if name in self.environ:
            return "environment"
        if name in self.file.lines:
            return f"{self.env_file.name} line {self.file.lines[name]}"
        return "default"

    def value(self, name: str) -> str:
        """The value in effect: Compose's, else the registry's default."""
        raw = self.variables.get(name)
        return raw if raw not in (None, "") else BY_NAME[name].default

    def rows(self, public_only: bool = True) -> list[dict[str, str]]:
        """Every setting in effect: name, value (secrets masked), source."""
        out = []
        for s in SETTINGS:
            if public_only and not s.public:
                continue
            value = self.value(s.name)
            shown = "***" if s.name in SECRET and value else value
            out.append({"name": s.name, "value": shown, "source": self.source(s.name)})
        return out
