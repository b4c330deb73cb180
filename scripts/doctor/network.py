"""Network steps: the port Compose publishes the gateway on, and the model hub (a complete
`models` volume counts when offline)."""

from __future__ import annotations

import re
from dataclasses import replace

from scripts.checks.row import FAIL, OK, Row
from scripts.doctor.facts import Facts
from scripts.doctor.settings_row import carried
from scripts.stack.settings import BY_NAME

HUBS = {"modelscope": "MODELSCOPE_ENDPOINT", "huggingface": "HF_ENDPOINT"}  # per MODEL_SOURCE
MODELSCOPE = "https://www.modelscope.cn"  # an empty MODELSCOPE_ENDPOINT (scripts/download.py)


def _publishers(f: Facts, port: int) -> list[dict]:
    pat = re.compile(rf"(?:^|[,\s])[^,\s]*:{port}->")
    return [c for c in f.containers() if pat.search(c.get("Ports") or "")]


def host_port(f: Facts) -> Row:
    name = "host port"
    bad = carried(name, "HOST_PORT", f.bad)
    if bad:
        default = BY_NAME["HOST_PORT"].default
        return replace(bad, fix=f"HOST_PORT={default} in .env", suggest={"HOST_PORT": default})
    p = f.compose
    addr, raw = p.published("gateway") or (p.value("BIND_ADDRESS"), p.value("HOST_PORT"))
    port = int(raw)
    free, why = f.host.port_free(addr, port)
    if free:
        return Row(name, OK, f"{addr}:{port} is free")
    if why != "in use":
        local = BY_NAME["BIND_ADDRESS"].default
        return Row(
            name, FAIL, f"cannot bind {addr}:{port}: {why}",
            f"BIND_ADDRESS={local} in .env (or an address of this host)", {"BIND_ADDRESS": local},
        )  # fmt: skip
    owners = _publishers(f, port)
    for c in owners:
        if f.ours(c):
            return Row(name, OK, f"{addr}:{port} is in use by this stack ({c.get('Names')})")
    if owners:
        c = owners[0]
        project = c["labels"].get("com.docker.compose.project")
        by = f"container {c.get('Names')}" + (f" (project {project})" if project else "")
    else:
        by = f.host.port_owner(port) or "another process"
    alt = next(
        (p for p in range(port + 1, min(port + 200, 65536)) if f.host.port_free(addr, p)[0]),
        None,
    )
    fix = f"set HOST_PORT={alt} in .env, or stop {by}" if alt else f"stop {by}"
    return Row(
        name, FAIL, f"port {port} is in use by {by}", fix, {"HOST_PORT": str(alt)} if alt else {}
    )


def hub(f: Facts) -> Row:
    name = "model hub"
    source = f.s.model_source
    var = HUBS[source]
    url = f.compose.value(var, "download") or MODELSCOPE
    ok, why = f.host.http_ok(url)
    if ok:
        return Row(name, OK, f"{source}: {url} answers ({why})")
    complete, what = f.volume_complete() if f.engine_up() else (False, "")
    if complete:
        return Row(name, OK, f"offline: {url} unreachable ({why}), but the volume is complete "
                   f"({what})")  # fmt: skip
    other = "huggingface" if source == "modelscope" else "modelscope"
    return Row(
        name, FAIL,
        f"{source}: {url} unreachable ({why}) and the models volume has no complete download",
        f"check the network or proxy (HTTPS_PROXY), set {var}=<mirror URL>, or "
        f"MODEL_SOURCE={other} in .env",
    )  # fmt: skip
