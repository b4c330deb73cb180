"""Every fact doctor reads about this machine goes through `Host` (tests pass a recorded one): the
one place that touches the machine. A leaf: it knows nothing of the stack (facts.py does)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from scripts.stack import proc


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
        return proc.run([exe, *argv[1:]], timeout, env=env, cwd=cwd, stdin=stdin)

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
