"""Create the stack's secrets once (stdlib only, runs on the host before `docker compose up`).

    python3 -m scripts.init_secrets     # writes what is missing; never overwrites

- secrets/api_key (API_KEY_FILE): the API key clients send as a Bearer token. One key per line;
  add lines to give each client its own key (the gateway limits each key on its own; vLLM's
  own key is the first line).
- secrets/grafana_admin_password (GRAFANA_ADMIN_PASSWORD_FILE): Grafana's `admin` password
  (the `monitoring` profile).
- secrets/tls/ (TLS_DIR): put tls.crt and tls.key here and the gateway serves HTTPS only.

The folder is private to you (0700); the files are 0644 so the non-root container users can read
them through the bind mounts that Compose uses for file secrets.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path


def write_once(path: Path, value: str, what: str) -> None:
    if path.exists() and path.read_text().strip():
        print(f"init_secrets: {path} already exists, kept")
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(0o644)
    print(f"init_secrets: wrote {what} to {path}")


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    write_once(
        Path(env.get("API_KEY_FILE") or "secrets/api_key"),
        secrets.token_urlsafe(32),
        "a new API key (clients send it as a Bearer token)",
    )
    write_once(
        Path(env.get("GRAFANA_ADMIN_PASSWORD_FILE") or "secrets/grafana_admin_password"),
        secrets.token_urlsafe(18),
        "Grafana's admin password",
    )
    tls = Path(env.get("TLS_DIR") or "secrets/tls")
    if not tls.is_dir():
        tls.mkdir(mode=0o755, parents=True)
        print(f"init_secrets: made {tls}/ (put tls.crt and tls.key there for HTTPS)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
