"""What the REASONING_FIELDS middleware (scripts/reasoning_fields.py) adds to each streamed chunk
and to each request, against a fake upstream that answers at once: every figure is the
middleware's own cost, with none of vLLM's in it.

    python -m bench.reasoning_fields [--requests 300] [--http-requests 100]

1. in process: the middleware's __call__ around an ASGI app that sends a stored chat answer
   (streamed: one `data:` event per send, as vLLM writes them; not streamed: one JSON body), its
   CPU time against the bare app's, request after request, modes interleaved;
2. over HTTP: uvicorn (what vLLM runs) serving the same app with and without each middleware,
   a client on loopback reading whole streams: what a client would see, with uvicorn's and the
   client's own noise in it.
The answer has the shape of the tutorial's (about 500 reasoning tokens, 100 of content, one per
event, text from the tutorial); each run checks the middleware's output (the same reasoning under
both names) before it prints figures. The machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import threading
import time

from scripts import reasoning_fields as rf

REASONING = "嗯，用户问的是5的阶乘是多少。首先，我得确认阶乘的定义。阶乘就是从1乘到那个数，对吧？"
CONTENT = "5的阶乘（记作5!）是5×4×3×2×1，计算结果为：**120**。"
HEAD = ('{"id":"chatcmpl-b3a229ef26f41e2b","object":"chat.completion.chunk","created":1796173647,'
        '"model":"Qwen3-8B","choices":[{"index":0,"delta":')  # fmt: skip
TAIL = ',"logprobs":null,"finish_reason":null,"token_ids":null}]}'


def events(reasoning_tokens: int = 500, content_tokens: int = 100) -> list[bytes]:
    """A streamed answer as vLLM 0.32.0 writes it (model_dump_json of each chunk), one event per
    token of text (a character here)."""
    out = [HEAD + '{"role":"assistant","content":""}' + TAIL]
    for kind, n, text in (("reasoning", reasoning_tokens, REASONING), ("content", content_tokens,
                                                                       CONTENT)):  # fmt: skip
        out += [HEAD + json.dumps({kind: text[i % len(text)]}, ensure_ascii=False,
                                  separators=(",", ":")) + TAIL for i in range(n)]  # fmt: skip
    out.append(HEAD + '{"content":""},"logprobs":null,"finish_reason":"stop","token_ids":null}]}')
    return [f"data: {e}\n\n".encode() for e in out] + [b"data: [DONE]\n\n"]


def answer(reasoning_tokens: int = 500, content_tokens: int = 100) -> bytes:
    """The same answer not streamed, as vLLM 0.32.0 writes it."""
    text = "".join(REASONING[i % len(REASONING)] for i in range(reasoning_tokens))
    content = "".join(CONTENT[i % len(CONTENT)] for i in range(content_tokens))
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                       "model": "Qwen3-8B", "choices": [{"index": 0, "message": {
                           "role": "assistant", "content": content, "refusal": None,
                           "reasoning": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 20, "completion_tokens": 600}},
                      ensure_ascii=False, separators=(",", ":")).encode()  # fmt: skip


SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
REQUEST = json.dumps({"model": "Qwen3-8B", "messages": [
    {"role": "user", "content": "我想问你，5的阶乘是多少？<think>\n"}]}).encode()  # fmt: skip


def upstream(stream: list[bytes], whole: bytes):
    """The fake vLLM: answers every POST at once, streamed when the body asks for it."""

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if json.loads(body).get("stream"):
            await send({"type": "http.response.start", "status": 200, "headers": SSE})
            for event in stream:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(whole)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": whole})

    return app


MODES = {"none": None, **{name: cls for name, cls in rf.MODES.items()}}


async def one(app, body: bytes) -> bytes:
    """One POST /v1/chat/completions through `app`, in process; the body sent back."""
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    out: list[bytes] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    scope = {"type": "http", "method": "POST", "path": rf.CHAT,
             "headers": [(b"content-length", str(len(body)).encode())]}  # fmt: skip
    await app(scope, receive, send)
    return b"".join(out)


def check(mode: str, streamed: bytes, whole: bytes) -> None:
    """The middleware did its job: the same reasoning under the names the mode says."""
    deltas = [json.loads(ln[6:])["choices"][0]["delta"] for ln in streamed.split(b"\n")
              if ln.startswith(b"data: {")]  # fmt: skip
    message = json.loads(whole)["choices"][0]["message"]
    assert len(deltas) == len(events()) - 1, f"{mode}: {len(deltas)} streamed deltas"
    for fields in ([d for d in deltas if "reasoning" in d or "reasoning_content" in d], [message]):
        for f in fields:
            want = {"none": ("reasoning",), "reasoning": ("reasoning",),
                    "both": ("reasoning", "reasoning_content"),
                    "reasoning_content": ("reasoning_content",)}[mode]  # fmt: skip
            got = tuple(k for k in ("reasoning", "reasoning_content") if k in f)
            assert got == want and len({f[k] for k in got}) == 1, (mode, f)


def in_process(requests: int, n_events: int) -> dict[str, dict[str, float]]:
    stream, whole = events(), answer()
    bare = upstream(stream, whole)
    apps = {m: bare if cls is None else cls(bare) for m, cls in MODES.items()}
    streaming = REQUEST.replace(b"]}", b'], "stream": true}')
    times: dict[str, dict[str, list[float]]] = {m: {"stream": [], "json": []} for m in apps}

    async def run():
        for m, app in apps.items():  # warm up, and check each mode's answer
            check(m, await one(app, streaming), await one(app, REQUEST))
        for _ in range(requests):
            for m, app in apps.items():  # interleaved: drift in the machine's load hits all
                for kind, body in (("stream", streaming), ("json", REQUEST)):
                    t0 = time.thread_time()  # CPU time: the others' load on a shared machine
                    await one(app, body)  # stays out of it
                    times[m][kind].append(time.thread_time() - t0)

    asyncio.run(run())
    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    return {m: {"stream_us": (med[m]["stream"] - med["none"]["stream"]) * 1e6,
                "chunk_us": (med[m]["stream"] - med["none"]["stream"]) * 1e6 / n_events,
                "json_us": (med[m]["json"] - med["none"]["json"]) * 1e6,
                "bare_stream_us": med["none"]["stream"] * 1e6}
            for m in apps}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def over_http(requests: int, n_events: int) -> dict[str, dict[str, float]]:
    import httpx
    import uvicorn

    stream, whole = events(), answer()
    bare = upstream(stream, whole)
    servers, urls = [], {}
    for m, cls in MODES.items():
        port = free_port()
        config = uvicorn.Config(bare if cls is None else cls(bare), host="127.0.0.1", port=port,
                                log_level="warning", access_log=False)  # fmt: skip
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        urls[m] = f"http://127.0.0.1:{port}/v1/chat/completions"
    while not all(s.started for s in servers):
        time.sleep(0.05)
    times: dict[str, dict[str, list[float]]] = {m: {"stream": [], "json": []} for m in urls}
    body = json.loads(REQUEST)
    try:
        with httpx.Client(timeout=60) as c:
            for m, url in urls.items():
                with c.stream("POST", url, json={**body, "stream": True}) as r:
                    streamed = b"".join(r.iter_bytes())
                check(m, streamed, c.post(url, json=body).content)
            for _ in range(requests):
                for m, url in urls.items():
                    t0 = time.perf_counter()
                    with c.stream("POST", url, json={**body, "stream": True}) as r:
                        for _chunk in r.iter_raw():
                            pass
                    t1 = time.perf_counter()
                    c.post(url, json=body).read()
                    t2 = time.perf_counter()
                    times[m]["stream"].append(t1 - t0)
                    times[m]["json"].append(t2 - t1)
    finally:
        for s in servers:
            s.should_exit = True
    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    return {m: {"stream_us": (med[m]["stream"] - med["none"]["stream"]) * 1e6,
                "chunk_us": (med[m]["stream"] - med["none"]["stream"]) * 1e6 / n_events,
                "json_us": (med[m]["json"] - med["none"]["json"]) * 1e6,
                "bare_stream_us": med["none"]["stream"] * 1e6}
            for m in urls}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300, help="in-process requests per mode")
    ap.add_argument("--http-requests", type=int, default=100, help="HTTP requests per mode")
    o = ap.parse_args(argv)
    n_events = len(events())
    n_reasoning = sum(b'"reasoning"' in e for e in events())
    print(f"answer: {n_events} streamed events ({n_reasoning} with reasoning), "
          f"{len(answer())} bytes not streamed; cpus {os.cpu_count()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    runs = (("in process (CPU time)", in_process, o.requests),
            ("over HTTP (uvicorn, loopback)", over_http, o.http_requests))  # fmt: skip
    for title, fn, n in runs:
        if n <= 0:
            continue
        res = fn(n, n_events)
        bare = res["none"]["bare_stream_us"]
        print(f"\n{title}: {n} requests per mode, medians; the bare app streams the answer in "
              f"{bare / 1000:.2f} ms")  # fmt: skip
        print(f"  {'REASONING_FIELDS':<18} {'per chunk':>11} {'per stream':>12} {'per request':>12}"
              "  (not streamed)")  # fmt: skip
        for m, r in res.items():
            if m != "none":
                print(f"  {m:<18} {r['chunk_us']:>8.2f} us {r['stream_us']:>9.0f} us "
                      f"{r['json_us']:>9.0f} us")  # fmt: skip
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
