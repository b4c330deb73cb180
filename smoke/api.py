"""The two ways the tutorial calls the endpoint: curl and the openai SDK. Both return the same
JSON (dicts), so every smoke check is written once and made with each (smoke/test_smoke.py).

Settings (all optional; the same in CI, the smoke container and on GPUs):
  SMOKE_BASE_URL   http://localhost:8000        SMOKE_MODEL   Qwen3-8B
  SMOKE_API_KEY or SMOKE_API_KEY_FILE           the key (a file's first key), if the server has one
  SMOKE_CHECK_ANSWERS=0                         skip the answer-text checks (dummy weights)
  SMOKE_MAX_TOKENS                              cap every answer (default 4096 thinking, 1024 not)
  SMOKE_REASONING_FIELDS=both                   the server's REASONING_FIELDS: both, reasoning
                                                (no `reasoning_content`: its checks are skipped)
                                                or reasoning_content (no `reasoning`)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

BASE = os.environ.get("SMOKE_BASE_URL", "http://localhost:8000").rstrip("/")
MODEL = os.environ.get("SMOKE_MODEL", "Qwen3-8B")
ANSWERS = os.environ.get("SMOKE_CHECK_ANSWERS", "1") == "1"
LONG = int(os.environ.get("SMOKE_MAX_TOKENS") or 4096)  # thinking answers
SHORT = int(os.environ.get("SMOKE_MAX_TOKENS") or 1024)
TIMEOUT = 900  # one answer, in seconds (a thinking answer on a slow GPU)
REQUESTS = json.loads((Path(__file__).parent / "requests.json").read_text())
FIELDS = os.environ.get("SMOKE_REASONING_FIELDS") or "both"
SDK_EXTRA = ("top_k", "min_p", "chat_template_kwargs")  # vLLM's own fields: extra_body in the SDK


def _key() -> str:
    if os.environ.get("SMOKE_API_KEY"):
        return os.environ["SMOKE_API_KEY"]
    path = os.environ.get("SMOKE_API_KEY_FILE")
    if not path:
        return ""
    lines = (k.strip() for k in Path(path).read_text().splitlines())
    return next((k for k in lines if k and not k.startswith("#")), "")  # the first key


KEY = _key()


class HTTPError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class Curl:
    """curl, as the tutorial's commands call it. The key goes in a header file (`-H @file`), so
    it never shows on a command line."""

    name = "curl"

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def _headers(self, key: str | None) -> Path:
        path = self.workdir / f"headers-{abs(hash(key))}"
        if not path.exists():
            path.touch(mode=0o600)
            lines = ["Content-Type: application/json"]
            lines += [f"Authorization: Bearer {key}"] if key else []
            path.write_text("\n".join(lines) + "\n")
        return path

    def request(self, method: str, path: str, body: dict | None = None, *, key: str | None = KEY,
                stream: bool = False) -> str:  # fmt: skip
        out = self.workdir / "body"
        cmd = ["curl", "-sS", "--max-time", str(TIMEOUT), "-X", method,
               "-H", f"@{self._headers(key)}", "-o", str(out), "-w", "%{http_code}"]  # fmt: skip
        if stream:
            cmd.append("-N")
        if body is not None:
            cmd += ["--data-binary", "@-"]
        r = subprocess.run([*cmd, BASE + path], input=json.dumps(body) if body else None,
                           capture_output=True, text=True, timeout=TIMEOUT + 30)  # fmt: skip
        if r.returncode:
            raise RuntimeError(f"curl failed ({r.returncode}): {r.stderr.strip()}")
        text = out.read_text(encoding="utf-8") if out.exists() else ""
        if r.stdout.strip() != "200":
            raise HTTPError(int(r.stdout.strip() or 0), text)
        return text

    def health(self) -> None:
        self.request("GET", "/health", key=None)

    def models(self, key=KEY) -> dict:
        return json.loads(self.request("GET", "/v1/models", key=key))

    def completion(self, body: dict, key=KEY) -> dict:
        return json.loads(self.request("POST", "/v1/completions", body, key=key))

    def chat(self, body: dict, key=KEY) -> dict:
        return json.loads(self.request("POST", "/v1/chat/completions", body, key=key))

    def chat_stream(self, body: dict) -> tuple[list[dict], bool | None]:
        """(chunks, whether the stream ended with `data: [DONE]`)."""
        text = self.request("POST", "/v1/chat/completions", {**body, "stream": True}, stream=True)
        data = [ln[len("data: ") :] for ln in text.splitlines() if ln.startswith("data: ")]
        done = bool(data) and data[-1] == "[DONE]"
        return [json.loads(d) for d in data if d != "[DONE]"], done


class SDK:
    """The openai SDK, as the tutorial's Python calls it (a placeholder key without one)."""

    name = "sdk"

    def __init__(self):
        import openai

        self.openai = openai

    def _client(self, key):
        return self.openai.OpenAI(base_url=f"{BASE}/v1", api_key=key or "sk-xxx",
                                  timeout=TIMEOUT, max_retries=0)  # fmt: skip

    def _call(self, fn, body: dict) -> dict:
        known = {k: v for k, v in body.items() if k not in SDK_EXTRA}
        extra = {k: v for k, v in body.items() if k in SDK_EXTRA}
        try:
            return fn(**known, extra_body=extra or None)
        except self.openai.APIStatusError as e:
            raise HTTPError(e.status_code, e.response.text) from e

    def models(self, key=KEY) -> dict:
        try:
            return self._client(key).models.list().model_dump()
        except self.openai.APIStatusError as e:
            raise HTTPError(e.status_code, e.response.text) from e

    def completion(self, body: dict, key=KEY) -> dict:
        return self._call(self._client(key).completions.create, body).model_dump()

    def chat(self, body: dict, key=KEY) -> dict:
        return self._call(self._client(key).chat.completions.create, body).model_dump()

    def chat_stream(self, body: dict) -> tuple[list[dict], bool | None]:
        stream = self._call(self._client(KEY).chat.completions.create, {**body, "stream": True})
        return [chunk.model_dump() for chunk in stream], None  # the SDK hides [DONE]


def only(*ways: str):
    """A check that only some ways can make (curl sees /health, bare SSE and no key at all)."""

    def mark(fn):
        fn.ways = ways
        return fn

    return mark


def message(r: dict) -> dict:
    return r["choices"][0]["message"]


def reasoning(m: dict) -> str | None:
    """The reasoning of a message or delta: today's field, `reasoning`, or the tutorial's,
    `reasoning_content`, where the server sends only that (SMOKE_REASONING_FIELDS). One field,
    never either: a server that left out the one it should send fails."""
    return m.get("reasoning_content" if FIELDS == "reasoning_content" else "reasoning")
