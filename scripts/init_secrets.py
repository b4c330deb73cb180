"""Create the API key secret once (stdlib only, runs on the host before `docker compose up`).

    python3 -m scripts.init_secrets     # writes secrets/api_key if it is missing; never overwrites

The folder is private to you (0700); the file is 0644 so the non-root container user can read
it through the bind mount that Compose uses for file secrets.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    path = Path(os.environ.get("API_KEY_FILE") or "secrets/api_key")
    if path.exists() and path.read_text().strip():
        print(f"init_secrets: {path} already exists, kept")
        return 0
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(secrets.token_urlsafe(32) + "\n")
    path.chmod(0o644)
    print(f"init_secrets: wrote a new API key to {path}; clients send it as a Bearer token")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
