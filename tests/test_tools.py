"""Tool calling, on by default (`--enable-auto-tool-choice --tool-call-parser hermes`), through
the real CPU vLLM server and its real `hermes` and `qwen3` parsers, with the scripted stand-in
that calls `get_weather` (smoke/requests.json): the tool call non-streaming and streamed, the
follow-up turn with the tool's result answered in text; and bad input: tool schemas that are
not JSON Schema get a 400 from scripts/tool_guard.py, an unknown TOOL_CALL_PARSER stops
scripts.serve before vLLM starts."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest

from bench import standins
from scripts import tool_guard
from tests.conftest import ROOT, cpu_env

REQUESTS = json.loads((ROOT / "smoke" / "requests.json").read_text())
WEATHER = REQUESTS["weather"]
ASK = [{"role": "user", "content": WEATHER["question"]}]


@pytest.fixture(scope="module")
def client(vllm_server):
    return openai.OpenAI(base_url=vllm_server["base_url"] + "/v1", api_key=vllm_server["key"],
                         max_retries=0, timeout=300)  # fmt: skip


def call_tool(client, **kw):
    return client.chat.completions.create(
        model="Qwen3-8B", messages=ASK, tools=WEATHER["tools"], **kw
    )


@pytest.mark.native
def test_tool_call_non_streaming(client):
    r = call_tool(client)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert not choice.message.content  # the call is not left in the text
    assert standins.TOOL_REASONING in choice.message.model_extra["reasoning"]


@pytest.mark.native
def test_tool_call_streamed_deltas_add_up_to_the_same_call(client):
    whole = call_tool(client).choices[0].message.tool_calls[0]
    calls: dict[int, dict] = {}
    finish, reasoning, content = None, "", ""
    for chunk in call_tool(client, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning") or ""
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            got = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": "", "deltas": 0})
            got["id"] = got["id"] or tc.id
            if tc.function:
                got["name"] += tc.function.name or ""
                got["arguments"] += tc.function.arguments or ""
                got["deltas"] += 1
        finish = chunk.choices[0].finish_reason or finish
    print(f"\nstreamed tool call: {calls}")
    assert finish == "tool_calls" and list(calls) == [0]
    got = calls[0]
    assert got["id"] and got["name"] == whole.function.name == "get_weather"
    assert got["arguments"] == whole.function.arguments  # the same text, not only the same JSON
    assert json.loads(got["arguments"]) == {"city": "Paris"}
    assert got["deltas"] > 2, "the arguments came in one piece: nothing was streamed"
    assert standins.TOOL_REASONING in reasoning and not content.strip()


@pytest.mark.native
@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_follow_up_with_the_tool_result_is_answered_in_text(client, stream):
    first = call_tool(client).choices[0].message
    messages = [
        *ASK,
        first.model_dump(include={"role", "content", "tool_calls"}, exclude_none=True),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id,
         "content": json.dumps(WEATHER["result"])},
    ]  # fmt: skip
    r = client.chat.completions.create(
        model="Qwen3-8B", messages=messages, tools=WEATHER["tools"], stream=stream
    )
    if stream:
        text, finish, calls = "", None, []
        for chunk in r:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                calls += chunk.choices[0].delta.tool_calls or []
                finish = chunk.choices[0].finish_reason or finish
    else:
        text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        calls = r.choices[0].message.tool_calls or []
    assert finish == "stop" and calls == []
    assert text.strip() == standins.WEATHER_ANSWER
    assert str(WEATHER["result"]["temperature_c"]) in text


def weather_tool(parameters) -> list[dict]:
    return [{"type": "function", "function": {"name": "get_weather", "parameters": parameters}}]


BAD_SCHEMAS = {
    "unknown type": {"type": "nonsense"},
    "type not a string": {"type": 5},
    "properties a list": {"type": "object", "properties": ["city"]},
    "required a string": {"type": "object", "properties": {"city": {}}, "required": "city"},
}


@pytest.mark.native
@pytest.mark.parametrize("tool_choice", ["auto", "required", "named"])
@pytest.mark.parametrize("schema", list(BAD_SCHEMAS))
def test_a_tool_schema_that_is_not_json_schema_gets_a_clear_400(vllm_server, schema, tool_choice):
    """vLLM itself answers 200 to all of these (it never checks the schema; "required" and a
    named tool then decode against a schema that means nothing)."""
    choice = {"named": {"type": "function", "function": {"name": "get_weather"}}}.get(
        tool_choice, tool_choice
    )
    r = httpx.post(
        vllm_server["base_url"] + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {vllm_server['key']}"},
        json={"model": "Qwen3-8B", "messages": ASK, "tools": weather_tool(BAD_SCHEMAS[schema]),
              "tool_choice": choice, "max_tokens": 8},
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "tools[0].function.parameters" and err["code"] == 400
    assert "of tool 'get_weather' is not a valid JSON Schema" in err["message"], err


@pytest.mark.native
def test_a_named_tool_choice_among_nameless_tools_is_a_400_not_a_500(vllm_server):
    r = httpx.post(
        vllm_server["base_url"] + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {vllm_server['key']}"},
        json={"model": "Qwen3-8B", "messages": ASK,
              "tools": [{"type": "function", "function": {"parameters": {}}}],
              "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("tools[0].function.name is missing")


@pytest.mark.native
def test_valid_tool_requests_pass_the_guard_unchanged(client):
    """A valid schema with a $schema of its own, tool_choice none, a request without tools."""
    tools = weather_tool(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            **WEATHER["tools"][0]["function"]["parameters"],
        }  # fmt: skip
    )
    r = client.chat.completions.create(model="Qwen3-8B", messages=ASK, tools=tools)
    assert r.choices[0].finish_reason == "tool_calls"
    r = client.chat.completions.create(model="Qwen3-8B", messages=ASK, tools=tools,
                                       tool_choice="none", max_tokens=4)  # fmt: skip
    assert not r.choices[0].message.tool_calls


@pytest.mark.unit
def test_guard_problems_name_the_tool_and_the_fix():
    assert tool_guard.problem({"tools": weather_tool({"type": "object"})}) is None
    assert tool_guard.problem({"messages": []}) is None
    assert tool_guard.problem({"tools": "x"}) is None  # vLLM's own 400
    msg, param = tool_guard.problem({"tools": weather_tool({"type": "nonsense"})})
    assert param == "tools[0].function.parameters"
    assert msg.startswith("tools[0].function.parameters of tool 'get_weather' is not a valid JSON")
    assert "(at type)" in msg and "fix the tool definition" in msg
    flat = {"tools": [{"type": "function", "name": "f", "parameters": {"type": 1}}]}  # Responses
    assert tool_guard.problem(flat)[1] == "tools[0].parameters"


@pytest.mark.native
@pytest.mark.parametrize(
    "env, needle",
    [
        (
            {"TOOL_CALL_PARSER": "hermess"},
            "TOOL_CALL_PARSER='hermess' is not a tool parser of vLLM",
        ),
        ({"REASONING_PARSER": "qwen"}, "REASONING_PARSER='qwen' is not a reasoning parser of vLLM"),
    ],
)
def test_an_unknown_parser_stops_serve_before_vllm_starts(served_models, vllm_python, env, needle):
    r = subprocess.run(
        [vllm_python, "-m", "scripts.serve"],
        cwd=ROOT, env=cpu_env(MODELS_DIR=str(served_models), **env),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("serve:")]
    assert needle in line and "fix it in .env" in line and "Traceback" not in r.stderr
    assert "'hermes'" in line or "'qwen3'" in line  # Qwen3's own parser is named
