"""REASONING_FIELDS (scripts/reasoning_fields.py, a vLLM middleware): the tutorial's
`reasoning_content` served beside today's `reasoning`, streamed and not, with the same text;
assistant messages sent back with `reasoning_content` read as their reasoning; a model name that
is not served answered with a 404 naming it and the served one. Through the real CPU vLLM (the
session server runs the default, `both`; one more server for each other value, the smoke suite
against it) and the gateway, and bad input: REASONING_FIELDS=nonsense stops scripts.serve before
vLLM starts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import openai
import pytest

from scripts import reasoning_fields as rf
from scripts.stack import settings as registry
from scripts.stack.settings import Settings
from scripts.stack.vllm_args import GUARD, HEALTH_GATE, build_args
from tests.conftest import ROOT, assert_smoke_passed, cpu_env, cpu_server, smoke_verdict
from tests.test_e2e import run_smoke
from tests.test_gateway import Gateway, nginx_or_skip

MODEL = "Qwen3-8B"
THINK = "我想问你，5的阶乘是多少？<think>\n"  # the scripted stand-in reasons about this one
ASK = {"model": MODEL, "messages": [{"role": "user", "content": THINK}]}
NO_THINK = {**ASK, "chat_template_kwargs": {"enable_thinking": False}}
NEW, OLD = "reasoning", "reasoning_content"


# --------------------------------------------------------------------------------------------
# the setting and the vLLM command


@pytest.mark.unit
def test_a_bad_value_stops_serve_before_vllm_starts(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "scripts.serve"], cwd=ROOT, capture_output=True, text=True,
        env=cpu_env(MODELS_DIR=str(tmp_path), REASONING_FIELDS="nonsense"), timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines() == [  # one line, naming the setting and the choices
        "serve: REASONING_FIELDS='nonsense' must be one of both, reasoning, reasoning_content; "
        "fix it in .env"
    ], r.stderr
    assert "--model" not in r.stderr, "vLLM was started: " + r.stderr  # serve prints its command


@pytest.mark.unit
def test_the_vllm_command_names_the_middleware_of_each_value():
    assert registry.BY_NAME["REASONING_FIELDS"].default == "both"
    assert set(rf.MODES) == set(registry.REASONING_FIELDS)
    for value, cls in rf.MODES.items():
        args = build_args(Settings(reasoning_fields=value))
        loaded = [args[i + 1] for i, a in enumerate(args) if a == "--middleware"]
        assert loaded == [GUARD, f"scripts.reasoning_fields.{cls.__name__}", HEALTH_GATE]
    r = subprocess.run(
        [sys.executable, "-m", "scripts.serve", "--print"], cwd=ROOT, capture_output=True,
        text=True, env=cpu_env(REASONING_FIELDS="reasoning_content", LOAD_FORMAT="dummy"),
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--middleware scripts.reasoning_fields.ReasoningContent" in r.stdout


# --------------------------------------------------------------------------------------------
# the rewrites, on the bytes vLLM writes


# a chunk as vLLM 0.32.0 streams it (model_dump_json: compact, UTF-8), with a reasoning text
# that holds what could confuse a rewrite: quotes, backslashes, the key itself, a newline
TRICKY = 'a "quote", a \\ backslash, "reasoning":"x" and 阶乘\n'
CHUNK = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"Qwen3-8B",'
    '"choices":[{"index":0,"delta":{"reasoning":' + json.dumps(TRICKY, ensure_ascii=False)
    + '},"logprobs":null,"finish_reason":null},{"index":1,"delta":{"content":"x"}}],'
    '"usage":{"completion_tokens_details":{"reasoning_tokens":3}}}'
).encode()  # fmt: skip


@pytest.mark.unit
def test_both_copies_each_reasoning_value_byte_for_byte():
    out = rf.both(CHUNK)
    doc = json.loads(out)
    delta = doc["choices"][0]["delta"]
    assert delta == {NEW: TRICKY, OLD: TRICKY}
    assert doc["choices"][1]["delta"] == {"content": "x"}
    assert doc["usage"] == {"completion_tokens_details": {"reasoning_tokens": 3}}
    value = json.dumps(TRICKY, ensure_ascii=False).encode()
    assert out == CHUNK.replace(value, value + b',"reasoning_content":' + value)
    message = b'{"message":{"role":"assistant","reasoning":null,"content":"5! = 120"}}'
    assert json.loads(rf.both(message))["message"][OLD] is None  # no thinking: null, as vLLM 0.8
    assert rf.both(b'{"content":"no reasoning here"}') == b'{"content":"no reasoning here"}'


@pytest.mark.unit
def test_old_name_renames_the_key_only():
    doc = json.loads(rf.old_name(CHUNK))
    assert doc["choices"][0]["delta"] == {OLD: TRICKY}
    assert doc["usage"] == {"completion_tokens_details": {"reasoning_tokens": 3}}


@pytest.mark.unit
def test_request_reasoning_content_becomes_reasoning():
    body = {"model": MODEL, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", OLD: "thought"},
        {"role": "assistant", "content": "", OLD: "old", NEW: "new"},  # vLLM's rule: reasoning wins
        {"role": "user", "content": "x", OLD: "not an assistant's"},
    ]}  # fmt: skip
    out = json.loads(rf.request_reasoning(json.dumps(body).encode()))
    assert out["messages"][1] == {"role": "assistant", "content": "", NEW: "thought"}
    assert out["messages"][2] == {"role": "assistant", "content": "", NEW: "new"}
    assert out["messages"][3] == body["messages"][3]
    assert rf.request_reasoning(json.dumps(ASK).encode()) is None  # passed on untouched


def run_asgi(middleware, app, body: bytes, path: str = rf.CHAT) -> tuple[list[dict], dict]:
    """One POST through `middleware(app)`: (the messages sent, what the app received)."""
    seen, sent = {}, []
    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(b"content-length", str(len(body)).encode())]}  # fmt: skip
    incoming = [{"type": "http.request", "body": body[:5], "more_body": True},
                {"type": "http.request", "body": body[5:], "more_body": False}]  # fmt: skip

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    async def recording(scope, receive, send):
        seen["headers"], seen["body"] = dict(scope["headers"]), b""
        while True:
            message = await receive()
            seen["body"] += message.get("body", b"")
            if not message.get("more_body"):
                break
        await app(scope, receive, send)

    asyncio.run(middleware(recording)(scope, receive, send))
    return sent, seen


SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]


def sse_app(pieces: list[bytes]):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        for i, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece,
                        "more_body": i < len(pieces) - 1})  # fmt: skip

    return app


@pytest.mark.unit
def test_a_streamed_event_split_across_sends_is_rewritten_whole():
    stream = b"data: " + CHUNK + b"\n\ndata: " + CHUNK + b"\n\ndata: [DONE]\n\n"
    cut = stream.index(b"quote")  # inside the first reasoning value
    for mode, rewrite in ((rf.Both, rf.both), (rf.ReasoningContent, rf.old_name)):
        sent, _ = run_asgi(mode, sse_app([stream[:cut], stream[cut:]]), json.dumps(ASK).encode())
        assert b"".join(m.get("body", b"") for m in sent) == rewrite(stream)
    sent, _ = run_asgi(rf.Reasoning, sse_app([stream[:cut], stream[cut:]]), b"{}")
    assert b"".join(m.get("body", b"") for m in sent) == stream


@pytest.mark.unit
def test_the_request_reaches_vllm_with_reasoning_and_its_length():
    body = json.dumps({**ASK, "messages": [{"role": "assistant", "content": "a", OLD: "r"},
                                           *ASK["messages"]]}).encode()  # fmt: skip
    for mode in rf.MODES.values():  # every value: clients of the tutorial send it back
        _, seen = run_asgi(mode, sse_app([b""]), body)
        assert json.loads(seen["body"])["messages"][0] == {"role": "assistant", "content": "a",
                                                          NEW: "r"}  # fmt: skip
        assert seen["headers"][b"content-length"] == str(len(seen["body"])).encode()


# --------------------------------------------------------------------------------------------
# the real vLLM (the session server: REASONING_FIELDS=both, the default)


@pytest.fixture(scope="module")
def http(vllm_server):
    with httpx.Client(base_url=vllm_server["base_url"], timeout=300,
                      headers={"Authorization": f"Bearer {vllm_server['key']}"}) as c:  # fmt: skip
        yield c


def streamed(http: httpx.Client, body: dict) -> list[dict]:
    """The deltas of a streamed chat answer, in order."""
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: {")]
    return [c["choices"][0]["delta"] for c in map(json.loads, lines) if c["choices"]]


@pytest.mark.native
def test_both_fields_carry_the_same_reasoning(http):
    r = http.post("/v1/chat/completions", json=ASK)
    assert r.status_code == 200, r.text
    m = r.json()["choices"][0]["message"]
    assert m[OLD] and m[OLD] == m[NEW], m
    assert m[OLD] not in m["content"] and "</think>" not in m["content"] and "120" in m["content"]
    deltas = streamed(http, ASK)
    with_reasoning = [d for d in deltas if NEW in d or OLD in d]
    assert len(with_reasoning) > 2, deltas  # the reasoning streamed in pieces
    assert all(d[OLD] == d[NEW] for d in with_reasoning), with_reasoning
    assert "".join(d[OLD] for d in with_reasoning) == m[OLD]  # the same text, streamed or not
    print(f"\nreasoning: {len(m[OLD])} characters under both names, in {len(with_reasoning)} "
          f"streamed deltas")  # fmt: skip


@pytest.mark.native
def test_no_thinking_has_neither_field(http):
    m = http.post("/v1/chat/completions", json=NO_THINK).json()["choices"][0]["message"]
    assert m[NEW] is None and m[OLD] is None, m  # null, as vLLM (and the tutorial's) write it
    assert not any(NEW in d or OLD in d for d in streamed(http, NO_THINK))


def prompt_tokens(http: httpx.Client, assistant: dict) -> int:
    """A tool-call loop (the one place Qwen3's template keeps an earlier turn's reasoning: after
    the last user message) whose assistant turn is `assistant`."""
    weather = json.loads((ROOT / "smoke" / "requests.json").read_text())["weather"]
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    body = {"model": MODEL, "max_tokens": 1, "tools": weather["tools"], "messages": [
        {"role": "user", "content": weather["question"]},
        {"role": "assistant", "content": "", "tool_calls": [call], **assistant},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(weather["result"])},
    ]}  # fmt: skip
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens"]


@pytest.mark.native
def test_reasoning_content_sent_back_is_read_as_reasoning(http):
    thought = "The user wants the weather in Paris, so I call get_weather."
    without = prompt_tokens(http, {})
    as_new, as_old = prompt_tokens(http, {NEW: thought}), prompt_tokens(http, {OLD: thought})
    print(f"\ntool loop prompt tokens: no reasoning {without}, reasoning {as_new}, "
          f"reasoning_content {as_old}")  # fmt: skip
    assert as_new > without and as_old == as_new


# --------------------------------------------------------------------------------------------
# the other values, each on a server of its own (started one after the other)


@pytest.fixture(scope="module")
def server_with(request, tmp_path_factory, served_models, vllm_python):
    """A CPU vLLM server with REASONING_FIELDS=request.param."""
    work = tmp_path_factory.mktemp(f"server-{request.param}")
    with cpu_server(work, served_models, vllm_python, REASONING_FIELDS=request.param) as server:
        yield server


TUTORIAL_CHECKS = {f"{way}: {name}" for way in ("curl", "sdk") for name in (
    "chat (thinking): reasoning_content, apart from the content, as the tutorial prints it",
    "chat (streaming): reasoning_content deltas, as the tutorial's clients read them",
)}  # fmt: skip


@pytest.mark.native
@pytest.mark.parametrize("server_with", ["reasoning"], indirect=True)
def test_reasoning_alone_fails_the_tutorials_checks(server_with):
    """REASONING_FIELDS=reasoning: vLLM's answer as it is, without `reasoning_content`. The smoke
    suite's tutorial checks fail against it; told the setting, it skips them and says why."""
    r = run_smoke(server_with, "-k", "reasoning_content")
    failed = {ln[5:].strip() for ln in r.stdout.splitlines() if ln.startswith("FAIL ")}
    assert r.returncode != 0 and failed == TUTORIAL_CHECKS, r.stdout[-4000:]
    assert "ok   curl: chat (no thinking): no reasoning_content" in r.stdout
    r = run_smoke(server_with, SMOKE_REASONING_FIELDS="reasoning")
    verdict = smoke_verdict(r.stdout)
    assert r.returncode == 0 and verdict["failed"] == "0", r.stdout[-4000:]
    assert set(verdict["skipped"].split("; ")) == {
        f"{c} (SMOKE_REASONING_FIELDS=reasoning)" for c in TUTORIAL_CHECKS
    }, verdict["skipped"]


@pytest.mark.native
@pytest.mark.parametrize("server_with", ["reasoning_content"], indirect=True)
def test_reasoning_content_alone_is_the_tutorials_answer(server_with):
    with httpx.Client(base_url=server_with["base_url"], timeout=300,
                      headers={"Authorization": f"Bearer {server_with['key']}"}) as c:  # fmt: skip
        m = c.post("/v1/chat/completions", json=ASK).json()["choices"][0]["message"]
        deltas = streamed(c, ASK)
    assert m[OLD] and NEW not in m, m
    assert "".join(d.get(OLD) or "" for d in deltas) == m[OLD]
    assert not any(NEW in d for d in deltas), deltas
    r = run_smoke(server_with, SMOKE_REASONING_FIELDS="reasoning_content")
    assert r.returncode == 0, r.stdout[-4000:]
    assert_smoke_passed(r.stdout, url=None)  # every check, the tutorial's among them


# --------------------------------------------------------------------------------------------
# what clients get wrong: a model that is not served, a base URL ending in a slash


@pytest.fixture(scope="module")
def gateway(vllm_server, tmp_path_factory):
    nginx_or_skip()
    gw = Gateway(tmp_path_factory.mktemp("gateway-22"), vllm_server["base_url"][7:],
                 [vllm_server["key"].strip()]).start()  # fmt: skip
    try:
        yield gw
    finally:
        gw.stop()


def assert_names_both_models(r: httpx.Response, asked: str) -> None:
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json"), r
    err = r.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("NotFoundError", "model", 404), err
    assert err["message"] == (f'The model `{asked}` does not exist: this server serves `{MODEL}` '
                              f'(SERVED_MODEL_NAME); send "model": "{MODEL}"'), err  # fmt: skip


@pytest.mark.unit
def test_the_404_names_the_served_model_whatever_vllm_wrote():
    want = ('The model `x` does not exist: this server serves `Qwen3-8B` (SERVED_MODEL_NAME); '
            'send "model": "Qwen3-8B"')  # fmt: skip
    # vLLM 0.19.1 and 0.26.0; 0.32.0
    for says in (
        "The model `x` does not exist.",
        "The model `x` does not exist. Valid aliases: a.",
    ):
        answer = {
            "error": {"message": says, "type": "NotFoundError", "param": "model", "code": 404}
        }
        out = rf.model_error(json.dumps(answer).encode(), b'{"model": "x"}', [MODEL])
        assert json.loads(out) == {"error": {**answer["error"], "message": want}}
    lora = {"error": {"message": "LoRA adapter y does not exist", "type": "NotFoundError",
                      "param": None, "code": 404}}  # fmt: skip
    assert rf.model_error(json.dumps(lora).encode(), b'{"model": "x"}', [MODEL]) is None


@pytest.mark.native
def test_a_model_that_is_not_served_is_a_404_naming_it_and_the_served_one(vllm_server, gateway):
    """The tutorial's last script asks for Qwen3-8B-Qwen-7B: vLLM 0.19.1 and 0.26.0 answer 404
    naming only that; here every version names the served model too, through the gateway and
    not, streamed or not, and the openai SDK raises NotFoundError with that message."""
    asked = "Qwen3-8B-Qwen-7B"
    for base, key in ((vllm_server["base_url"], vllm_server["key"]),
                      (gateway.url, gateway.keys[0])):  # fmt: skip
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                          timeout=120) as c:  # fmt: skip
            chat = {"model": asked, "messages": [{"role": "user", "content": "什么是深度学习？"}]}
            assert_names_both_models(c.post("/v1/chat/completions", json=chat), asked)
            assert_names_both_models(
                c.post("/v1/chat/completions", json={**chat, "stream": True}), asked
            )
            r = c.post("/v1/completions", json={"model": "x", "prompt": "hi", "max_tokens": 1})
            assert_names_both_models(r, "x")
        client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model=asked, messages=chat["messages"])
        assert f"this server serves `{MODEL}`" in str(e.value), e.value


@pytest.mark.native
def test_a_doubled_slash_is_the_route_it_doubles(gateway):
    """A base URL ending in a slash (http://host:8000/v1/) makes /v1//models (Open WebUI #12117):
    the gateway serves it as /v1/models (merge_slashes), JSON as every answer, never a page."""
    with httpx.Client(base_url=gateway.url, headers=gateway.auth(), timeout=120) as c:
        models = c.get(gateway.url + "/v1//models")
        assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL, models.text
        chat = c.post(gateway.url + "/v1//chat/completions", json={**ASK, "max_tokens": 4})
        assert chat.status_code == 200 and chat.json()["object"] == "chat.completion", chat.text
        done = c.post(gateway.url + "//v1//completions",
                      json={"model": MODEL, "prompt": THINK, "max_tokens": 2})  # fmt: skip
        assert done.status_code == 200 and done.json()["object"] == "text_completion", done.text
        for path, status in (("/v1//nothing", 404), ("/v1//models/", 404)):
            r = c.get(gateway.url + path)
            assert r.status_code == status and r.json()["error"]["code"] == status, r.text
        r = httpx.get(gateway.url + "/v1//models", timeout=60)  # no key
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


# --------------------------------------------------------------------------------------------
# the benchmark runs and checks what it measures (its figures are printed, never asserted)


@pytest.mark.unit
def test_the_benchmark_prints_its_figures():
    r = subprocess.run(
        [sys.executable, "-m", "bench.reasoning_fields", "--requests", "3", "--http-requests", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    print("\n" + r.stdout)
    for mode in rf.MODES:
        assert sum(ln.split()[:1] == [mode] for ln in r.stdout.splitlines()) == 2, r.stdout
    assert "load average" in r.stdout
