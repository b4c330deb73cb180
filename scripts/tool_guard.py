"""An ASGI middleware for vLLM's OpenAI server (`--middleware scripts.tool_guard.ToolGuard`, added
by scripts/serve.py): tool definitions that vLLM would not refuse itself get a 400 here.

vLLM validates a request's shape, but not that a tool's `parameters` is a JSON Schema: it answers
200 and, with `tool_choice` "required" or a named tool, guides decoding with that schema (output
that matches nothing), and a named `tool_choice` among tools without a `name` ends in a 500.
This checks, on POST /v1/chat/completions and /v1/responses, that every tool has a function
name and that its parameters are a valid JSON Schema (the draft its `$schema` names, else 2020-12),
and answers a 400 in vLLM's own error shape naming the tool and the fix. Everything else passes
through untouched, with the body replayed as it came.

It runs before vLLM's own API-key check (vLLM adds user middleware outermost); behind the gateway
every request has passed the key check already.
"""

from __future__ import annotations

import json

PATHS = ("/v1/chat/completions", "/v1/responses")
MAX_BODY = 64 * 1024 * 1024  # larger bodies pass through unread (the gateway caps them anyway)


def problem(body: dict) -> tuple[str, str] | None:
    """(message, param) for the first tool definition vLLM should not get, else None."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None  # absent, or a shape vLLM refuses itself
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            return None
        fn = tool.get("function") if tool.get("type", "function") == "function" else None
        if fn is None and "name" in tool and "parameters" in tool:
            fn = tool  # the Responses API's flat function tools
        if not isinstance(fn, dict):
            continue
        where = f"tools[{i}].function" if fn is not tool else f"tools[{i}]"
        name = fn.get("name")
        if not isinstance(name, str) or not name.strip():
            return (f"{where}.name is missing: every tool needs a function name", f"{where}.name")
        params = fn.get("parameters")
        if params is None:
            continue
        if not isinstance(params, dict):
            return None  # vLLM answers 400 for a non-object itself
        reason = schema_error(params)
        if reason:
            return (
                f"{where}.parameters of tool {name!r} is not a valid JSON Schema: {reason}; "
                'fix the tool definition (e.g. {"type": "object", "properties": {...}})',
                f"{where}.parameters",
            )
    return None


def schema_error(schema: dict) -> str | None:
    try:
        import jsonschema
        from jsonschema.exceptions import SchemaError
    except ImportError:  # not installed with this vLLM: nothing to check against
        return None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        return f"{e.message} (at {path})"
    return None


class ToolGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in PATHS:
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
        found = None
        if received[-1]["type"] == "http.request" and not received[-1].get("more_body", False):
            try:
                body = json.loads(b"".join(chunks))
            except ValueError:
                body = None  # not JSON: vLLM answers that itself
            if isinstance(body, dict):
                found = problem(body)
        if found:
            message, param = found
            payload = json.dumps(
                {
                    "error": {
                        "message": message,
                        "type": "BadRequestError",
                        "param": param,
                        "code": 400,
                    }
                }  # fmt: skip
            ).encode()
            await send({"type": "http.response.start", "status": 400, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": payload})
            return

        async def replay():
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)
