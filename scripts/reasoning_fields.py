"""An ASGI middleware for vLLM's OpenAI server, one class per REASONING_FIELDS value
(`--middleware scripts.reasoning_fields.Both`, added by scripts/stack/vllm_args.py): the
tutorial's `reasoning_content` served by today's vLLM, and a 404 that names the served model.

What vLLM sends (read from the source of each version the bundle ships): 0.19.1, 0.26.0 and
0.32.0 put the reasoning in `reasoning` only, in `message` and in each streamed `delta`;
`reasoning_content`, the tutorial's field (vLLM 0.8), is gone (vLLM PR #33402, RFC #27755).
REASONING_FIELDS decides what chat answers carry, streamed or not:
  both               `reasoning_content` beside each `reasoning`, with the same value (text or
                     null), so clients of either name read the same text
  reasoning          vLLM's answer as it is
  reasoning_content  `reasoning` renamed: the tutorial's answer
The text is vLLM's own bytes: each `"reasoning":VALUE` is copied or renamed in place, never
parsed and written again. In a chat answer vLLM writes that key only in `choices[].message` and
`choices[].delta` (`usage` counts `reasoning_tokens`, another key; a quote inside a string is
escaped, so `"reasoning":` cannot occur in text). Streamed events are rewritten one by one as
they pass, never held back (a line split across two sends waits for its end).

Requests to /v1/chat/completions: an assistant message's `reasoning_content` is read as its
`reasoning` (unless it has one), so it reaches the chat template (Qwen3's renders it for the
assistant turns after the last user message: a tool-call loop). vLLM 0.26 and later do that
themselves (PR #42664); 0.19.1 drops the field (it reads `reasoning` only), and so did the
tutorial's vLLM before the template (vLLM PR #20505 and #21655 on the stripping).

A model name that is not served: vLLM answers 404 naming only the name asked for (0.19.1,
0.26.0; 0.32.0 adds "Valid aliases"); this answers, on every version, vLLM's 404 with a message
that names both and the fix.
"""

from __future__ import annotations

import json
import re

CHAT = "/v1/chat/completions"
MODEL_PATHS = (CHAT, "/v1/completions", "/v1/responses")  # what vLLM 404s on with param=model
MAX_BODY = 64 * 1024 * 1024  # larger request bodies pass through unread (the gateway caps them)
KEY = b'"reasoning"'
# `"reasoning":` and its value (a JSON string or null) as vLLM wrote them
PAIR = re.compile(rb'"reasoning"(\s*:\s*)("[^"\\]*(?:\\.[^"\\]*)*"|null)')
NAME = re.compile(rb'"reasoning"(?=\s*:)')


def _pair(m: re.Match) -> bytes:
    return m[0] + b',"reasoning_content"' + m[1] + m[2]  # a function: faster than a template


def both(data: bytes) -> bytes:
    """Each `"reasoning":V` followed by `,"reasoning_content":V` (V: the same bytes)."""
    return PAIR.sub(_pair, data) if KEY in data else data


def old_name(data: bytes) -> bytes:
    """Each `"reasoning":` key renamed `"reasoning_content":`."""
    return NAME.sub(b'"reasoning_content"', data) if KEY in data else data


def request_reasoning(body: bytes) -> bytes | None:
    """The chat request with each assistant message's `reasoning_content` given as its
    `reasoning` (vLLM's own rule from 0.26 on: an existing `reasoning` wins), or None when no
    message has one (the body then goes on as it came)."""
    if b'"reasoning_content"' not in body:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # vLLM answers that itself
    messages = doc.get("messages") if isinstance(doc, dict) else None
    changed = False
    for m in messages if isinstance(messages, list) else ():
        if isinstance(m, dict) and m.get("role") == "assistant" and "reasoning_content" in m:
            old = m.pop("reasoning_content")
            if m.get("reasoning") is None and old is not None:
                m["reasoning"] = old
            changed = True
    return json.dumps(doc, ensure_ascii=False).encode() if changed else None


def served_names(scope) -> list[str]:
    """The names vLLM serves its model under (--served-model-name), from the app's state."""
    models = getattr(getattr(scope.get("app"), "state", None), "openai_serving_models", None)
    return [m.name for m in getattr(models, "base_model_paths", None) or ()]


def model_error(answer: bytes, request: bytes, served: list[str]) -> bytes | None:
    """vLLM's 404 for a model it does not serve, with a message naming the model asked for and
    the served one(s); None for any other 404."""
    try:
        doc, asked = json.loads(answer), json.loads(request).get("model")
    except (ValueError, AttributeError):
        return None
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict) or err.get("param") != "model" or not served:
        return None
    names = ", ".join(f"`{n}`" for n in served)
    err["message"] = (
        f"The model `{asked}` does not exist: this server serves {names} (SERVED_MODEL_NAME); "
        f'send "model": "{served[0]}"'
    )
    return json.dumps(doc).encode()


def _header(headers, name: bytes) -> bytes:
    return next((v for k, v in headers if k.lower() == name), b"")


class _ReasoningFields:
    rewrite = None  # bytes -> bytes for the chat answers' JSON; None leaves them as they are

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in MODEL_PATHS:
            await self.app(scope, receive, send)
            return
        received, chunks, size = [], [], 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body", False) or size > MAX_BODY:
                break
        whole = received[-1]["type"] == "http.request" and not received[-1].get("more_body")
        body = b"".join(chunks) if whole else b""
        if whole and path == CHAT and (new := request_reasoning(body)) is not None:
            received = [{"type": "http.request", "body": new, "more_body": False}]
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(new)).encode())]}

        async def replay():
            return received.pop(0) if received else await receive()

        rewrite = self.rewrite if path == CHAT else None
        held: dict | None = None  # the response start, while a whole JSON body is read
        parts: list[bytes] = []
        kind = ""  # "sse": rewrite each event; "json": the whole body; "404": maybe the model
        tail = b""  # the end of a streamed event that has not come whole yet

        async def send_rewritten(message):
            nonlocal held, kind, tail
            if message["type"] == "http.response.start":
                status, ctype = message["status"], _header(message["headers"], b"content-type")
                if status == 404 and whole and ctype.startswith(b"application/json"):
                    kind = "404"
                elif rewrite is None or status != 200:
                    kind = ""
                elif ctype.startswith(b"text/event-stream"):
                    kind = "sse"
                elif ctype.startswith(b"application/json"):
                    kind = "json"
                if kind in ("json", "404"):
                    held = message
                    return
                await send(message)
                return
            if message["type"] != "http.response.body" or not kind:
                await send(message)
                return
            data, more = message.get("body", b""), message.get("more_body", False)
            if kind == "sse":
                if tail:
                    data, tail = tail + data, b""
                if more and not data.endswith(b"\n"):  # only whole lines are rewritten
                    cut = data.rfind(b"\n") + 1
                    data, tail = data[:cut], data[cut:]
                await send({**message, "body": rewrite(data)})
                return
            parts.append(data)
            if more:
                return
            whole_answer = b"".join(parts)
            if kind == "json":
                out = rewrite(whole_answer)
            else:
                out = model_error(whole_answer, body, served_names(scope)) or whole_answer
            headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(out)).encode()))
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": out, "more_body": False})

        await self.app(scope, replay, send_rewritten)


class Both(_ReasoningFields):
    """REASONING_FIELDS=both: `reasoning` and `reasoning_content`, the same text."""

    rewrite = staticmethod(both)


class Reasoning(_ReasoningFields):
    """REASONING_FIELDS=reasoning: vLLM's answers as they are."""


class ReasoningContent(_ReasoningFields):
    """REASONING_FIELDS=reasoning_content: `reasoning_content` only, as the tutorial shows."""

    rewrite = staticmethod(old_name)


MODES = {"both": Both, "reasoning": Reasoning, "reasoning_content": ReasoningContent}
