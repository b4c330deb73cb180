"""What doctor's steps share: the host's answers, parsed once, and what the settings step found
(Compose's view of the project, the settings with defaults in place of invalid values, the
invalid ones by name, and whether the stack runs on GPU or CPU)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from scripts.checks import gpus
from scripts.checks.gpus import Gpu
from scripts.doctor.host import Host
from scripts.stack import model
from scripts.stack.compose import Project
from scripts.stack.settings import Settings


class Facts:
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
            rc, out, err = self.host.run(list(gpus.NVIDIA_SMI))
            if rc == 127:
                return None, "nvidia-smi not found: no NVIDIA driver on this host"
            if rc != 0:
                first = (err or out).strip().splitlines()
                return None, "nvidia-smi failed: " + (first[0] if first else f"exit {rc}")
            try:
                return gpus.parse_gpus(out), ""
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

    def shape(self) -> model.ModelShape | None:
        def get():
            known = model.model_shape(self.s)
            if known is not None:
                return known
            text, _ = self.volume_file(f"{self.s.checkpoint_id}/config.json")
            return model.model_shape(self.s, text)

        return self._once("shape", get)
