"""Every fact doctor reads about this machine goes through `Host` (tests pass a recorded one);
`Facts` parses each answer once for the steps."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import preflight
from scripts.preflight import Gpu
from scripts.settings import Settings

if TYPE_CHECKING:  # compose.py asks Compose through a Host
    from scripts.doctor.compose import Project


class Host:
    """This machine: commands, files, disk, ports, HTTP. Tests pass a subclass fed with
    recordings (tests/fixtures/hosts/)."""

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 30,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: str | None = None,
    ) -> tuple[int, str, str]:
        """(exit status, stdout, stderr); 127 when the program is missing, 124 on timeout. The
        program is looked up on this process's PATH; `env` is the whole environment it gets."""
        exe = self.which(argv[0])
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

    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def disk_free(self, path: str) -> int:
        return shutil.disk_usage(path).free

    def read_text(self, path: str) -> str:
        return Path(path).read_text()

    def list_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def port_free(self, addr: str, port: int) -> tuple[bool, str]:
        """Try to bind addr:port as Docker would; (False, reason) when that fails."""
        try:
            infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            return False, f"cannot resolve {addr} ({e.strerror})"
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return False, "in use"
                return False, e.strerror or str(e)
        return True, ""

    def port_owner(self, port: int) -> str | None:
        """The program listening on a TCP port, from /proc (None when not visible to us)."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{f[9]}]")
        if not inodes:
            return None
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    return f"{comm} (pid {pid})"
            except OSError:
                continue
        return None

    def http_ok(self, url: str, timeout: float = 5) -> tuple[bool, str]:
        """Does anything answer HTTP at url? Any status counts; (False, why) otherwise."""
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "qvs-doctor"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return True, f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            return True, f"HTTP {e.code}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            return False, f"{type(reason).__name__}: {reason}"


class Facts:
    """What the steps share: the host's answers, parsed once, and what the settings step found
    (Compose's view of the project, the settings with defaults in place of invalid values, the
    invalid ones by name, and whether the stack runs on GPU or CPU)."""

    def __init__(
        self, host: Host, compose: Project, s: Settings, bad: Mapping[str, str], device: str
    ):
        self.host, self.compose, self.s, self.bad, self.device = host, compose, s, bad, device
        self._cache: dict[str, object] = {}

    def _once(self, key: str, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def docker_json(self, what: str) -> tuple[dict | None, str]:
        """`docker version|info --format '{{json .}}'`: (parsed, error)."""

        def get():
            rc, out, err = self.host.run(["docker", what, "--format", "{{json .}}"])
            try:
                data = json.loads(out) if out.strip() else None
            except ValueError:
                data = None
            if rc != 0 or not isinstance(data, dict):
                return data if isinstance(data, dict) else None, (err or out).strip() or f"rc {rc}"
            return data, ""

        return self._once("docker " + what, get)

    def engine_up(self) -> bool:
        info, err = self.docker_json("info")
        return bool(info) and not err

    def gpus(self) -> tuple[list[Gpu] | None, str]:
        """Every GPU of the host, as nvidia-smi lists them (whatever *_VISIBLE_DEVICES say)."""

        def get():
            rc, out, err = self.host.run(list(preflight.NVIDIA_SMI))
            if rc == 127:
                return None, "nvidia-smi not found: no NVIDIA driver on this host"
            if rc != 0:
                first = (err or out).strip().splitlines()
                return None, "nvidia-smi failed: " + (first[0] if first else f"exit {rc}")
            try:
                return preflight.parse_gpus(out), ""
            except ValueError as e:
                return None, str(e)

        return self._once("gpus", get)

    def containers(self) -> list[dict]:
        """Running containers (`docker ps`), each with its labels parsed."""

        def get():
            rc, out, _ = self.host.run(["docker", "ps", "--format", "{{json .}}"])
            rows = []
            for line in out.splitlines() if rc == 0 else []:
                try:
                    c = json.loads(line)
                except ValueError:
                    continue
                labels = dict(
                    kv.split("=", 1) for kv in (c.get("Labels") or "").split(",") if "=" in kv
                )
                c["labels"] = labels
                rows.append(c)
            return rows

        return self._once("ps", get)

    def ours(self, c: dict, service: str | None = None) -> bool:
        """Is container c part of this stack (and of that service)?"""
        labels = c["labels"]
        return labels.get("com.docker.compose.project") == self.compose.project and (
            service is None or labels.get("com.docker.compose.service") == service
        )

    def stack_running(self) -> bool:
        return any(self.ours(c, "vllm") for c in self.containers())

    def volume_file(self, rel: str) -> tuple[str | None, str]:
        """A file of the `models` volume: (text, "") or (None, why). Read under the volume's
        Mountpoint when this user may (root, a rootless engine); otherwise, only when the stack's
        image is already local, through a throw-away container of it (`docker run --rm --pull
        never --network none`: no pull, no network, about a second). Never builds or pulls."""

        def get():
            vol = self.compose.volume("models")
            rc, out, _ = self.host.run(
                ["docker", "volume", "inspect", vol, "--format", "{{json .}}"]
            )
            if rc != 0:
                return None, f"no volume {vol}"
            try:
                mount = json.loads(out)["Mountpoint"]
            except (ValueError, KeyError, TypeError):
                return None, f"cannot read `docker volume inspect {vol}`"
            try:
                return self.host.read_text(f"{mount}/{rel}"), ""
            except FileNotFoundError:
                return None, f"{rel} is not in the volume"
            except OSError:
                pass  # not readable as this user: ask a throw-away container of the local image
            for tag in (self.s.track, "cpu"):
                image = f"{self.compose.project}:{tag}"
                if self.host.run(["docker", "image", "inspect", image, "--format", "{{.Id}}"])[0]:
                    continue
                rc, out, err = self.host.run(
                    ["docker", "run", "--rm", "--pull", "never", "--network", "none",
                     "--entrypoint", "cat", "-v", f"{vol}:/m:ro", image, f"/m/{rel}"],
                    timeout=60,
                )  # fmt: skip
                if rc == 0:
                    return out, ""
                return None, f"{rel} is not readable in the volume ({err.strip()[:80]})"
            return None, f"volume {vol} is not readable by this user (run doctor with sudo)"

        return self._once("volume:" + rel, get)

    def volume_complete(self) -> tuple[bool, str]:
        text, why = self.volume_file(f"{self.s.checkpoint_id}/.qvs-complete.json")
        if text is None:
            return False, why
        try:
            files = json.loads(text)["files"]
        except (ValueError, KeyError, TypeError):
            return False, ".qvs-complete.json is unreadable"
        return bool(files), f"{len(files)} verified files"

    def shape(self) -> preflight.ModelShape | None:
        def get():
            known = preflight.model_shape(self.s)
            if known is not None:
                return known
            text, _ = self.volume_file(f"{self.s.checkpoint_id}/config.json")
            return preflight.model_shape(self.s, text)

        return self._once("shape", get)
