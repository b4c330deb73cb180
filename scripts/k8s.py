"""Kubernetes manifests for the stack, from the same settings as compose.yaml.

    python3 -m scripts.k8s                       # every object to stdout (multi-document YAML)
    python3 -m scripts.k8s --out k8s/            # one file per object in k8s/, then the next steps
    python3 -m scripts.k8s --image REGISTRY/qwen3-vllm-stack:cu124 --replicas 2 --out k8s/

Runs on the host with plain python3 and PyYAML (Debian/Ubuntu: python3-yaml), which writes the
YAML; without it, one line names the install (exit 2). The settings are Compose's own reading of
them (`.env` under the environment, asked through scripts/stack/compose.py), validated by
scripts/stack/settings.py; a bad value stops with one line naming the setting and the fix, and so
does a missing Compose plugin (exit 2): without it .env cannot be read as Compose reads it.
What the pods share with compose.yaml (images, users, memory limits, /dev/shm, tmpfs sizes, grace
periods, the gateway's ports, the key file) comes from the project Compose resolves (`docker
compose config`, no engine needed; COMPOSE_FILE's overrides included): see `Wiring`.
Kubernetes-only knobs (namespace, image, storage, replicas, Service type) are flags; the probes
and resource requests are this file's own.

What it makes, in the namespace (`--namespace`, created with the `restricted` Pod Security level
unless `--no-namespace`):
  StatefulSet qwen3-vllm    GPU_COUNT GPUs per replica; init container `python -m scripts.download`
                            onto the replica's own `models` volume, then `python -m scripts.serve`,
                            which builds the vLLM argument list from the same settings environment
                            as compose (the list is also written into an annotation); probes on
                            /health sized for a cold start; the API key from a Secret at
                            /run/secrets/api_key. A StatefulSet, not a Deployment: each replica
                            keeps its own ReadWriteOnce models and compile-cache volumes, and an
                            update replaces a replica in place instead of wanting spare GPUs.
  Service qwen3-vllm        ClusterIP in front of the replicas (+ qwen3-vllm-pods, headless, for
                            the StatefulSet's pod names)
  NetworkPolicy             only the gateway's pods reach vLLM
  Deployment qwen3-gateway  the same nginx gateway as compose (gateway/run.sh from a ConfigMap made
                            from the file): key check, route allowlist, per-key limits, optional
                            TLS from the Secret qwen3-gateway-tls
  Service qwen3-gateway     the only way in (`--service-type`, ClusterIP by default)
The Secrets are never written here: `kubectl create secret` reads the key file (printed below).
No object is named `vllm`: Kubernetes would put VLLM_PORT=tcp://... into pods, which vLLM reads as
its own setting (service links are off in these pods as well).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scripts import pin_images, router
from scripts.stack import compose, model, profiles, settings
from scripts.stack.model import CACHES_GB
from scripts.stack.settings import Settings, SettingsError, load
from scripts.stack.vllm_args import build_args

ROOT = Path(__file__).resolve().parent.parent
APP = "qwen3-vllm-stack"
VLLM = "qwen3-vllm"
GATEWAY = "qwen3-gateway"
API_KEY_SECRET = "qwen3-api-key"  # key `api_key`: the file compose mounts (one key per line)
HF_TOKEN_SECRET = "qwen3-hf-token"  # key `token`; optional
TLS_SECRET = "qwen3-gateway-tls"  # a kubernetes.io/tls Secret: tls.crt + tls.key, as run.sh wants

# The settings each container reads, by scope in scripts/stack/settings.py (compose passes the same
# names; unset ones take the registry's defaults inside the containers)
CONTAINER_ENV = tuple(
    x.name for x in settings.SETTINGS if x.scope == settings.CONTAINER and x.public
)
DOWNLOAD_ENV = tuple(
    x.name for x in settings.SETTINGS if x.scope == settings.HUB and x.name != "HF_TOKEN"
)
GATEWAY_ENV = tuple(x.name for x in settings.SETTINGS if x.scope == settings.GATEWAY)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # serve never calls a hub

# Probes. A cold start (first compile) took 324 s on an H100, a warm one 96 s; a slower GPU or
# more of them takes longer, so the startup probe allows as long as the router waits for a first
# replica. The download runs in the init container, before any probe counts.
PROBE_PERIOD_S = 10
STARTUP_BUDGET_S = router.STARTUP_TIMEOUT_S
# liveness: scripts/liveness.py, the compose healthcheck's progress check; it fails once the
# engine has gone HANG_TIMEOUT without progress (vLLM's /health answers 200 while it hangs),
# and two failed looks in a row restart the container
LIVENESS_FAILURES = 2
READINESS_FAILURES = 3  # 30 s without /health takes the replica out of the Service
MODELS_HEADROOM = 1.25  # the models volume: the weights plus a quarter
CACHE_SIZE_FACTOR = 4  # the cache volume: doctor's estimate of the compile caches, four times

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
QUANTITY = re.compile(r"[1-9][0-9]*(Ki|Mi|Gi|Ti)")
DOCKER_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgt]?)i?b?", re.IGNORECASE)  # 64g, 1.5g, 4096
GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")  # Compose's JSON: 1m30s, 500ms


class ManifestError(ValueError):
    """A problem with the input; str() names the setting or flag and the fix, on one line."""


# --- YAML: PyYAML writes it (block style, keys in order, multi-line strings as `|` blocks) ----


def _yaml():
    """PyYAML, or ManifestError naming the install (the host's python3 may lack it)."""
    try:
        import yaml
    except ImportError:
        raise ManifestError(
            f"PyYAML is not installed for {sys.executable}; fix: sudo apt-get install "
            "python3-yaml (or python3 -m pip install pyyaml)"
        ) from None
    return yaml


def dump_all(objects: list[dict]) -> str:
    """Multi-document YAML, each document after `---`; raises ManifestError without PyYAML."""
    yaml = _yaml()

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False):
            return super().increase_indent(flow, False)  # lists indented under their key

        def ignore_aliases(self, data: object) -> bool:
            return True  # a block used twice (the security context) is written out twice

    def text(dumper: yaml.SafeDumper, v: str):  # PyYAML quotes instead where `|` cannot keep v
        return dumper.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)

    Dumper.add_representer(str, text)
    return yaml.dump_all(
        objects, Dumper=Dumper, explicit_start=True, sort_keys=False, default_flow_style=False,
        allow_unicode=True, width=float("inf"),
    )  # fmt: skip


# --- input ------------------------------------------------------------------------------------


def one_line(e: SettingsError) -> str:
    """settings.load() lists several problems on several lines; here they share one."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() != "invalid settings:"]
    return "; ".join(lines)


def docker_bytes(raw: str) -> int | None:
    """Docker's 64g / 1.5g / 512m / 4096 (bytes) in bytes; None when it is no such size."""
    m = DOCKER_SIZE.fullmatch(raw.strip())
    if not m:
        return None
    unit = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    return int(float(m.group(1)) * unit)


def quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity in the largest binary unit that holds it exactly."""
    for power, unit in ((4, "Ti"), (3, "Gi"), (2, "Mi"), (1, "Ki")):
        if n % 1024**power == 0:
            return f"{n // 1024**power}{unit}"
    return str(n)


def go_seconds(raw: str) -> int | None:
    """A Go duration as Compose's JSON writes it (1m30s, 1h0m0s, 500ms) in whole seconds, rounded
    up; None when it is no such duration."""
    parts = GO_DURATION.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        return None
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return math.ceil(sum(float(n) * scale[u] for n, u in parts))


@dataclass(frozen=True)
class Wiring:
    """The compose files as Compose resolves them (`docker compose config --format json`: sizes in
    bytes, durations like 1m30s): what the pods take from there, so that compose.yaml stays the one
    place it is written. Each method raises ManifestError naming the key and the fix."""

    project: compose.Project  # with its config: the services resolved

    def _get(self, service: str, key: str):
        services = (self.project.config or {}).get("services") or {}
        if service not in services:
            raise ManifestError(
                f"compose: the compose files have no `{service}` service; fix COMPOSE_FILE "
                "(compose.yaml and its overrides)"
            )
        value = services[service].get(key)
        if value in (None, "", []):
            raise ManifestError(
                f"compose: services.{service}.{key} is not set, and the manifests take it from "
                "there; fix compose.yaml"
            )
        return value

    def _bad(self, service: str, key: str, value: object, want: str) -> ManifestError:
        return ManifestError(
            f"compose: services.{service}.{key}={value!r} {want}; fix compose.yaml"
        )

    def image(self, service: str) -> str:
        return self._get(service, "image")

    def user(self, service: str) -> tuple[int, int]:
        """`user: "uid:gid"` as runAsUser and runAsGroup (restricted pods: numeric, not root)."""
        raw = self._get(service, "user")
        m = re.fullmatch(r"(\d+):(\d+)", str(raw))
        if not m or int(m.group(1)) == 0:
            raise self._bad(service, "user", raw, "must be a numeric uid:gid other than root")
        return int(m.group(1)), int(m.group(2))

    def size(self, service: str, key: str) -> str:
        """shm_size or mem_limit (bytes in Compose's JSON) as a quantity."""
        raw = self._get(service, key)
        if not str(raw).isdigit() or int(raw) == 0:
            raise self._bad(service, key, raw, "must be a size like 8g")
        return quantity(int(raw))

    def tmpfs(self, service: str, path: str) -> str:
        """The size of the tmpfs at `path` (`/tmp:size=1g,...`) as a quantity."""
        for entry in self._get(service, "tmpfs"):
            where, _, options = str(entry).partition(":")
            if where == path:
                opts = dict(o.partition("=")[::2] for o in options.split(","))
                n = docker_bytes(opts.get("size", ""))
                if not n:
                    raise self._bad(service, "tmpfs", entry, "needs a size like size=64m")
                return quantity(n)
        raise self._bad(service, "tmpfs", self._get(service, "tmpfs"), f"has no {path}")

    def grace_s(self, service: str) -> int:
        raw = self._get(service, "stop_grace_period")
        n = go_seconds(str(raw))
        if n is None:
            raise self._bad(service, "stop_grace_period", raw, "must be a duration like 90s")
        return n

    def healthcheck(self, service: str) -> tuple[list[str], int]:
        """The healthcheck's command (its ["CMD", ...] test) and its timeout in seconds."""
        raw = self._get(service, "healthcheck")
        test = raw.get("test") or []
        timeout = go_seconds(str(raw.get("timeout", "")))
        if len(test) < 2 or test[0] != "CMD" or timeout is None:
            raise self._bad(service, "healthcheck", raw, 'needs a ["CMD", ...] test and a timeout')
        return list(test[1:]), timeout

    def listen(self) -> int:
        """The gateway's GATEWAY_LISTEN ([address:]port): where nginx listens in its pod."""
        raw = str((self._get("gateway", "environment") or {}).get("GATEWAY_LISTEN") or "")
        port = raw.rpartition(":")[2]
        if not port.isdigit():
            raise self._bad("gateway", "environment.GATEWAY_LISTEN", raw, "must end in a port")
        return int(port)

    def published(self) -> int:
        """The gateway's published port (HOST_PORT): its Service's port, kubectl's port-forward."""
        self._get("gateway", "ports")
        _, raw = self.project.published("gateway") or ("", "")
        if not raw.isdigit():
            raise self._bad("gateway", "ports[0].published", raw, "must be a port")
        return int(raw)

    def key_file(self) -> Path:
        """The file of the api_key secret (API_KEY_FILE), as Compose resolved it."""
        return Path(self.project.secret_file("api_key", "API_KEY_FILE"))


def picked(merged: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {k: merged[k] for k in names if merged.get(k, "") != ""}


def settings_env(merged: Mapping[str, str]) -> dict[str, str]:
    """The settings both containers get, as set in .env or the environment; unset ones take
    scripts/stack/settings.py's defaults inside the container, as they do under compose."""
    return {**picked(merged, CONTAINER_ENV), "MODELS_DIR": "/models"}


def serve_env(merged: Mapping[str, str]) -> dict[str, str]:
    """The vllm container's environment: what compose gives its `vllm` service."""
    return {
        **settings_env(merged),
        "API_KEY_FILE": "/run/secrets/api_key",
        **OFFLINE_ENV,
    }


def env_list(env: Mapping[str, str]) -> list[dict]:
    return [{"name": k, "value": v} for k, v in env.items()]


# --- objects ----------------------------------------------------------------------------------


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def meta(name: str, ns: str, component: str, **extra) -> dict:
    return {"name": name, "namespace": ns, "labels": labels(component), **extra}


def pod_security(uid: int, gid: int) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,  # the volumes are writable by the image's user
        "fsGroupChangePolicy": "OnRootMismatch",  # no chown pass over 16 GB of weights each start
        "seccompProfile": {"type": "RuntimeDefault"},
    }


CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def http_probe(port: str, failures: int, timeout: int = 5) -> dict:
    return {
        "httpGet": {"path": "/health", "port": port},
        "periodSeconds": PROBE_PERIOD_S,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def liveness_probe(w: Wiring) -> dict:
    """compose's vllm healthcheck (scripts/liveness.py) as the liveness probe, with `--no-end`:
    the kubelet, not the check, restarts the container."""
    command, timeout = w.healthcheck("vllm")
    return {
        "exec": {"command": [*command, "--no-end"]},
        "periodSeconds": PROBE_PERIOD_S,
        "timeoutSeconds": timeout,
        "failureThreshold": LIVENESS_FAILURES,
    }


def models_size(s: Settings) -> str:
    shape = model.model_shape(s)  # the checkpoint SERVE_PROFILE downloads
    if shape is None:
        raise ManifestError(
            f"MODEL_ID={s.model_id}: its size is not known here; fix: pass --models-size "
            "(e.g. --models-size 40Gi, the weights plus a quarter)"
        )
    weights = shape.weight_bytes(profiles.PROFILES[s.profile].weights)
    return f"{math.ceil(weights * MODELS_HEADROOM / 2**30)}Gi"


def claim(name: str, size: str, storage_class: str) -> dict:
    spec: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"metadata": {"name": name, "labels": labels("vllm")}, "spec": spec}


def termination_grace_s(s: Settings, w: Wiring) -> int:
    """vllm's stop_grace_period in compose is sized for SHUTDOWN_TIMEOUT's default (60 s for 30):
    the pod keeps that margin over the SHUTDOWN_TIMEOUT in effect."""
    grace, default = w.grace_s("vllm"), int(settings.BY_NAME["SHUTDOWN_TIMEOUT"].default)
    if grace <= default:
        raise ManifestError(
            f"compose: services.vllm.stop_grace_period ({grace} s) must exceed "
            f"SHUTDOWN_TIMEOUT's default ({default} s); fix compose.yaml"
        )
    return s.shutdown_timeout + grace - default


def vllm_objects(
    s: Settings, merged: Mapping[str, str], w: Wiring, o: argparse.Namespace
) -> list[dict]:
    ns = o.namespace
    common = settings_env(merged)
    download_env = env_list({**common, **picked(merged, DOWNLOAD_ENV)})
    if s.model_source == "huggingface":  # gated models; the token never enters a manifest
        ref = {"name": HF_TOKEN_SECRET, "key": "token", "optional": True}
        download_env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    memory, download_memory = w.size("vllm", "mem_limit"), w.size("download", "mem_limit")
    uid, gid = w.user("vllm")  # the pod's; the init container's own where compose differs
    download_user = dict(zip(("runAsUser", "runAsGroup"), w.user("download"), strict=True))
    gpus = {"nvidia.com/gpu": str(s.gpu_count)}
    scratch = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": "/home/vllm"},
        {"name": "cache", "mountPath": "/cache"},
    ]
    download = {
        "name": "download",
        "image": o.image or w.image("download"),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "scripts.download"],
        "env": download_env,
        "resources": {
            "requests": {"cpu": "500m", "memory": download_memory},
            "limits": {"memory": download_memory},
        },
        "securityContext": (
            CONTAINER_SECURITY
            if download_user == {"runAsUser": uid, "runAsGroup": gid}
            else {**CONTAINER_SECURITY, **download_user}
        ),
        "volumeMounts": [{"name": "models", "mountPath": "/models"}, *scratch],
    }
    serve = {
        "name": "vllm",
        "image": o.image or w.image("vllm"),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "scripts.serve"],  # builds the vLLM arguments from env
        "env": env_list(serve_env(merged)),
        "ports": [{"name": "http", "containerPort": s.port}],
        "resources": {
            "requests": {"cpu": str(2 * s.gpu_count), "memory": memory, **gpus},
            "limits": {"memory": memory, **gpus},
        },
        "startupProbe": http_probe("http", math.ceil(STARTUP_BUDGET_S / PROBE_PERIOD_S)),
        "readinessProbe": http_probe("http", READINESS_FAILURES),
        "livenessProbe": liveness_probe(w),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "models", "mountPath": "/models", "readOnly": True},
            *scratch,
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "api-key", "mountPath": "/run/secrets", "readOnly": True},
        ],
    }
    pod = {
        "metadata": {"labels": labels("vllm")},
        "spec": {
            "securityContext": pod_security(uid, gid),
            "automountServiceAccountToken": False,  # no Kubernetes API calls
            "enableServiceLinks": False,  # no VLLM_PORT=tcp://... from a Service's name
            "terminationGracePeriodSeconds": termination_grace_s(s, w),
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "initContainers": [download],
            "containers": [serve],
            "volumes": [
                # the sizes of compose's tmpfs (here on the node's disk, not in memory)
                {"name": "tmp", "emptyDir": {"sizeLimit": w.tmpfs("vllm", "/tmp")}},
                {"name": "home", "emptyDir": {"sizeLimit": w.tmpfs("vllm", "/home/vllm")}},
                # NCCL's /dev/shm; memory-backed, counts as pod memory
                {
                    "name": "shm",
                    "emptyDir": {"medium": "Memory", "sizeLimit": w.size("vllm", "shm_size")},
                },
                {
                    "name": "api-key",
                    "secret": {
                        "secretName": API_KEY_SECRET,
                        "items": [{"key": "api_key", "path": "api_key"}],
                        "defaultMode": 0o440,
                    },
                },
            ],
        },
    }
    args = shlex.join(build_args(s))
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(VLLM, ns, "vllm", annotations={f"{APP}/vllm-args": args}),
        "spec": {
            "serviceName": f"{VLLM}-pods",
            "replicas": o.replicas,
            "podManagementPolicy": "Parallel",  # replicas are independent: start them together
            "updateStrategy": {"type": "RollingUpdate"},  # one replica at a time, in place
            "selector": {"matchLabels": labels("vllm")},
            "template": pod,
            "volumeClaimTemplates": [
                claim("models", o.models_size or models_size(s), o.storage_class),
                claim("cache", o.cache_size, o.storage_class),
            ],
        },
    }
    port = {"name": "http", "port": s.port, "targetPort": "http"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(VLLM, ns, "vllm"),
        "spec": {"type": "ClusterIP", "selector": labels("vllm"), "ports": [port]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(f"{VLLM}-pods", ns, "vllm"),
        "spec": {"clusterIP": "None", "selector": labels("vllm"), "ports": [port]},
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(f"{VLLM}-from-gateway", ns, "vllm"),
        "spec": {
            "podSelector": {"matchLabels": labels("vllm")},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": labels("gateway")}}],
                    "ports": [{"protocol": "TCP", "port": s.port}],
                }
            ],
        },
    }
    return [service, headless, statefulset, policy]


def gateway_objects(
    s: Settings, merged: Mapping[str, str], w: Wiring, o: argparse.Namespace
) -> list[dict]:
    ns = o.namespace
    script = (ROOT / "gateway" / "run.sh").read_text()
    listen, (uid, gid) = w.listen(), w.user("gateway")
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(f"{GATEWAY}-script", ns, "gateway"),
        "data": {"run.sh": script},
    }
    env = {
        "GATEWAY_KEYS_FILE": "/run/secrets/api_key",
        # nginx resolves through the cluster DNS without search domains: the full name
        "GATEWAY_UPSTREAM": f"{VLLM}.{ns}.svc.{o.cluster_domain}:{s.port}",
        "GATEWAY_LISTEN": str(listen),  # any address: the pod's own
        "GATEWAY_TLS_DIR": "/run/qvs-tls",
        **picked(merged, GATEWAY_ENV),
    }
    tcp = {"tcpSocket": {"port": "http"}, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 5}
    container = {
        "name": "gateway",
        "image": w.image("gateway"),
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "/etc/qvs-gateway/run.sh"],  # renders nginx.conf, execs nginx
        "env": env_list(env),
        "ports": [{"name": "http", "containerPort": listen}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": w.size("gateway", "mem_limit")},
        },
        # up (and in the Service) before vLLM is: it answers 503 + Retry-After meanwhile, as in
        # compose; /health through the gateway would tie its probes to vLLM's
        "readinessProbe": {**tcp, "failureThreshold": 3},
        "livenessProbe": {**tcp, "failureThreshold": 6},
        # nginx stops gracefully on SIGQUIT (Kubernetes sends SIGTERM: a fast stop); the pause
        # lets the Service drop this pod first
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "/bin/sh",
                        "-c",
                        "sleep 5; kill -QUIT 1; while kill -0 1 2>/dev/null; do sleep 1; done",
                    ]  # fmt: skip
                }
            }
        },
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "script", "mountPath": "/etc/qvs-gateway", "readOnly": True},
            {"name": "api-key", "mountPath": "/run/secrets", "readOnly": True},
            {"name": "tls", "mountPath": "/run/qvs-tls", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    checksum = hashlib.sha256(script.encode()).hexdigest()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(GATEWAY, ns, "gateway"),
        "spec": {
            "replicas": 1,  # per-key limits are per nginx: more replicas multiply them
            "selector": {"matchLabels": labels("gateway")},
            "template": {
                "metadata": {
                    "labels": labels("gateway"),
                    "annotations": {f"{APP}/run.sh-sha256": checksum},  # new script: new pods
                },
                "spec": {
                    "securityContext": pod_security(uid, gid),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": w.grace_s("gateway"),  # open streams end
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "script",
                            "configMap": {"name": f"{GATEWAY}-script", "defaultMode": 0o444},
                        },
                        {
                            "name": "api-key",
                            "secret": {
                                "secretName": API_KEY_SECRET,
                                "items": [{"key": "api_key", "path": "api_key"}],
                                "defaultMode": 0o440,
                            },
                        },
                        {
                            "name": "tls",  # absent Secret: plain HTTP (TLS at an Ingress)
                            "secret": {
                                "secretName": TLS_SECRET,
                                "optional": True,
                                "defaultMode": 0o440,
                            },
                        },
                        {
                            "name": "tmp",
                            "emptyDir": {
                                "medium": "Memory",
                                "sizeLimit": w.tmpfs("gateway", "/tmp"),
                            },
                        },
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(GATEWAY, ns, "gateway"),
        "spec": {
            "type": o.service_type,
            "selector": labels("gateway"),
            "ports": [{"name": "http", "port": w.published(), "targetPort": "http"}],
        },
    }
    return [configmap, deployment, service]


def manifests(env: Mapping[str, str], o: argparse.Namespace) -> list[dict]:
    """Every object, in the order `kubectl apply` should see them. Raises ManifestError."""
    return manifests_from(*read(env, o.env_file), o)


def read(env: Mapping[str, str], env_file: Path) -> tuple[dict[str, str], Settings, Wiring]:
    """The settings as Compose reads them (.env under the environment), validated, and the
    compose files as Compose resolves them with those settings. Raises ManifestError naming the
    install where Compose is missing (never the environment alone: .env would be silently
    ignored), the bad line where Compose cannot read .env, or the setting and the fix."""
    c = compose.Compose(env_file=env_file, environ=env)
    try:
        c.require()
    except compose.ComposeError as e:
        raise ManifestError(str(e)) from None
    try:
        merged = c.variables()
    except compose.ComposeError as e:
        raise ManifestError(f"{e}; fix that line of .env") from None
    s = checked(merged)  # before Compose resolves the services with them: the setting is named
    try:
        return merged, s, Wiring(compose.Project(merged, c.config()))
    except compose.ComposeError as e:
        raise ManifestError(f"{e}; fix the value it names in .env or the compose files") from None


def checked(merged: Mapping[str, str]) -> Settings:
    """The containers' settings, and those Compose reads that the manifests depend on."""
    try:
        s = load(serve_env(merged))
    except SettingsError as e:
        raise ManifestError(one_line(e)) from None
    bad = settings.problems(merged, ("TRACK", "HOST_PORT"))  # the image's tag, the Service's port
    if bad:
        raise ManifestError("; ".join(bad.values()))
    limit = merged.get("SERVE_MEMORY_LIMIT", "").strip()
    if limit and not docker_bytes(limit):
        raise ManifestError(f"SERVE_MEMORY_LIMIT={limit!r} must be a size like 64g; fix it in .env")
    image = merged.get("GATEWAY_IMAGE", "").strip()
    if image and pin_images.parse_image(image) is None:
        raise ManifestError(f"GATEWAY_IMAGE={image!r} is not an image reference; fix it in .env")
    return s


def manifests_from(
    merged: Mapping[str, str], s: Settings, w: Wiring, o: argparse.Namespace
) -> list[dict]:
    objects: list[dict] = []
    if o.create_namespace:
        restricted = {
            f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")
        }
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": o.namespace, "labels": {**labels("namespace"), **restricted}},
            }
        )
    return objects + vllm_objects(s, merged, w, o) + gateway_objects(s, merged, w, o)


# --- CLI --------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(2, f"k8s: {message}; see python3 -m scripts.k8s --help\n")


def _matching(pattern: re.Pattern, what: str):
    def check(raw: str) -> str:
        if not pattern.fullmatch(raw):
            raise argparse.ArgumentTypeError(f"{raw!r} must be {what}")
        return raw

    return check


def _image(raw: str) -> str:
    if pin_images.parse_image(raw) is None:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not an image reference like REGISTRY/NAME:TAG"
        )
    return raw


def _replicas(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise argparse.ArgumentTypeError(f"{raw!r} must be a whole number between 1 and 64")
    return int(raw)


def parser() -> Parser:
    ap = Parser(
        prog="python3 -m scripts.k8s",
        description="Kubernetes manifests for the stack from the settings (.env, environment)",
    )
    ap.add_argument("--out", type=Path, help="write one file per object here (default: stdout)")
    ap.add_argument(
        "--namespace", default="qwen3", type=_matching(DNS_LABEL, "a DNS label"),
        help="default: %(default)s",
    )  # fmt: skip
    ap.add_argument(
        "--no-namespace", dest="create_namespace", action="store_false",
        help="the namespace exists already: do not emit it",
    )  # fmt: skip
    ap.add_argument(
        "--image", type=_image,
        help="the stack's image as the cluster pulls it (default: qwen3-vllm-stack:TRACK, which "
        "only a node that has it loaded can run; push yours and name it here)",
    )  # fmt: skip
    ap.add_argument("--replicas", type=_replicas, default=1, help="vLLM replicas, GPU_COUNT each")
    ap.add_argument(
        "--storage-class", type=_matching(DNS_NAME, "a StorageClass name"),
        help="for the models and cache volumes (default: the cluster's default class)",
    )  # fmt: skip
    size = _matching(QUANTITY, "a size like 40Gi")
    ap.add_argument("--models-size", type=size, help="default: the model's weights plus a quarter")
    ap.add_argument(
        "--cache-size", type=size,
        default=f"{math.ceil(CACHES_GB * CACHE_SIZE_FACTOR)}Gi",
        help="the compile caches (default: %(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--service-type", default="ClusterIP", choices=("ClusterIP", "LoadBalancer", "NodePort"),
        help="the gateway's Service (default: %(default)s; reach it with kubectl port-forward)",
    )  # fmt: skip
    ap.add_argument(
        "--cluster-domain", default="cluster.local", type=_matching(DNS_NAME, "a DNS name")
    )
    ap.add_argument("--env-file", type=Path, default=ROOT / ".env", help=argparse.SUPPRESS)
    return ap


def file_name(i: int, obj: dict) -> str:
    return f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def shown(path: Path) -> str:
    """A path as a user would type it here: relative below the working directory."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def next_steps(o: argparse.Namespace, merged: Mapping[str, str], w: Wiring, target: str) -> str:
    ns = o.namespace
    key_file, port = shown(w.key_file()), w.published()
    lines = [
        f"k8s: next steps (namespace {ns}):",
        f"  kubectl apply -f {target}",
        f"  kubectl -n {ns} create secret generic {API_KEY_SECRET} --from-file=api_key={key_file}"
        + (
            ""
            if w.key_file().exists()
            else "   # make the file first: python3 -m scripts.init_secrets"
        ),
    ]
    if merged.get("MODEL_SOURCE") == "huggingface":
        lines.append(
            f"  kubectl -n {ns} create secret generic {HF_TOKEN_SECRET} "
            '--from-literal=token="$HF_TOKEN"   # gated models only'
        )
    lines += [
        f"  kubectl -n {ns} create secret tls {TLS_SECRET} --cert=tls.crt --key=tls.key"
        "   # optional: HTTPS at the gateway",
        f"  kubectl -n {ns} rollout status statefulset/{VLLM} --timeout=60m"
        "   # download, then a cold start",
        f"  kubectl -n {ns} port-forward svc/{GATEWAY} {port}:{port}",
        "The pods wait for the Secret; the image must be one the nodes can pull (--image).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    o = parser().parse_args(argv)
    try:
        _yaml()  # before anything else: no half-done run without it
        merged, s, w = read(os.environ, o.env_file)
        objects = manifests_from(merged, s, w, o)
        steps = next_steps(
            o, merged, w, "-   # this output, piped" if o.out is None else str(o.out)
        )
    except ManifestError as e:
        print(f"k8s: {e}", file=sys.stderr)
        return 2
    if o.out is None:
        sys.stdout.write(dump_all(objects))
        sys.stderr.write(steps)
        return 0
    o.out.mkdir(parents=True, exist_ok=True)
    for old in o.out.glob("[0-9][0-9]-*.yaml"):  # objects no longer made must not linger
        old.unlink()
    for i, obj in enumerate(objects):
        (o.out / file_name(i, obj)).write_text(dump_all([obj]))
    print(f"k8s: wrote {len(objects)} objects to {o.out}/")
    print(steps, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
