"""The smoke checks: the tutorial's requests (smoke/requests.json), each made with curl and with
the openai SDK (smoke/api.py). A check's name is its docstring; `bash smoke/run` prints one
line per check and the verdict. Checks of the answer's text take the `answers` fixture, so
SMOKE_CHECK_ANSWERS=0 (dummy weights) skips them and says so."""

from __future__ import annotations

import json

import pytest
from api import FIELDS, LONG, MODEL, REQUESTS, SHORT, HTTPError, message, only, reasoning

PROMPT = REQUESTS["prompt"]
WEATHER = REQUESTS["weather"]
COMPLETION = {"model": MODEL, "prompt": PROMPT, "max_tokens": SHORT, "temperature": 0}
THINKING = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": LONG}
NO_THINKING = {
    **THINKING, "max_tokens": SHORT, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0,
    "chat_template_kwargs": {"enable_thinking": False},
}  # fmt: skip
DEEP_LEARNING = {"model": MODEL, "max_tokens": 16,
                 "messages": [{"role": "user", "content": "什么是深度学习？"}]}  # fmt: skip
STREAM = {**THINKING, "stream_options": {"include_usage": True}}
TOOLS = {"model": MODEL, "max_tokens": LONG, "tools": WEATHER["tools"],
         "messages": [{"role": "user", "content": WEATHER["question"]}]}  # fmt: skip


@only("curl")
def test_health(api):
    """GET /health answers 200"""
    api.health()


def test_models(api):
    """GET /v1/models lists the served model"""
    models = api.models()["data"]
    assert [m["id"] for m in models] == [MODEL]
    assert models[0].get("max_model_len", 0) > 0


def test_completion_prompt_tokens(api):
    """completions: the tutorial's prompt is 12 tokens"""
    r = api.completion(COMPLETION)
    assert r["usage"]["prompt_tokens"] == 12 and r["usage"]["completion_tokens"] > 0


def test_completion_answer(api, answers):
    """completions: the answer says 120"""
    assert "120" in api.completion(COMPLETION)["choices"][0]["text"]


def test_thinking_prompt_tokens(api):
    """chat (thinking): the prompt is 20 tokens"""
    assert api.chat(THINKING)["usage"]["prompt_tokens"] == 20


def test_thinking_answer(api, answers):
    """chat (thinking): reasoning separated from the content, which says 120"""
    m = message(api.chat(THINKING))
    assert reasoning(m), "thinking mode returned no reasoning"
    assert "</think>" not in (m["content"] or "") and "120" in m["content"]


def test_thinking_reasoning_content(api, answers, tutorial_field):
    """chat (thinking): reasoning_content, apart from the content, as the tutorial prints it"""
    m = message(api.chat(THINKING))
    text, content = m.get("reasoning_content"), m["content"] or ""
    assert isinstance(text, str) and text.strip(), f"no reasoning_content; the message has {m}"
    assert "</think>" not in content and text.strip() not in content
    if FIELDS == "both":
        assert text == m.get("reasoning"), "reasoning_content and reasoning differ"


def test_no_thinking_has_no_reasoning(api):
    """chat (no thinking): no reasoning"""
    assert not reasoning(message(api.chat(NO_THINKING)))


def test_no_thinking_has_no_reasoning_content(api):
    """chat (no thinking): no reasoning_content"""
    assert not message(api.chat(NO_THINKING)).get("reasoning_content")


def test_no_thinking_answer(api, answers):
    """chat (no thinking): the answer says 120"""
    assert "120" in message(api.chat(NO_THINKING))["content"]


def test_deep_learning_prompt_tokens(api):
    """chat: 什么是深度学习？ is 12 prompt tokens"""
    assert api.chat(DEEP_LEARNING)["usage"]["prompt_tokens"] == 12


@only("curl")
def test_stream_events(api):
    """chat (streaming): server-sent events ending in data: [DONE]"""
    chunks, done = api.chat_stream(STREAM)
    assert len(chunks) > 1 and done


def test_stream_finish_and_usage(api):
    """chat (streaming): a finish reason and the usage (20 prompt tokens) at the end"""
    chunks, _ = api.chat_stream(STREAM)
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] in ("stop", "length")
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["prompt_tokens"] == 20


def test_stream_answer(api, answers):
    """chat (streaming): reasoning arrives before the content, which says 120"""
    chunks, _ = api.chat_stream(STREAM)
    kinds, content = [], ""
    for c in chunks:
        delta = c["choices"][0]["delta"] if c["choices"] else {}
        if reasoning(delta):
            kinds.append("reasoning")
        if delta.get("content"):
            kinds.append("content")
            content += delta["content"]
    assert "reasoning" in kinds and "content" in kinds
    assert "reasoning" not in kinds[kinds.index("content") :], "reasoning arrived after content"
    assert "120" in content


def test_stream_reasoning_content(api, answers, tutorial_field):
    """chat (streaming): reasoning_content deltas, as the tutorial's clients read them"""
    chunks, _ = api.chat_stream(STREAM)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas).strip(), "none streamed"
    if FIELDS == "both":
        differ = [d for d in deltas if d.get("reasoning_content") != d.get("reasoning")]
        assert not differ, f"deltas whose reasoning_content and reasoning differ: {differ[:3]}"


def test_tools_accepted(api):
    """tool call: a request with tools is answered"""
    choice = api.chat(TOOLS)["choices"][0]
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    for call in choice["message"].get("tool_calls") or []:
        assert isinstance(call["function"]["name"], str)
        assert isinstance(call["function"]["arguments"], str)


def test_tool_call(api, answers):
    """tool call: get_weather is called for Paris"""
    choice = api.chat(TOOLS)["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] and call["function"]["name"] == "get_weather"
    assert "paris" in json.loads(call["function"]["arguments"])["city"].lower()


def test_tool_result_answered(api, answers):
    """tool call: the tool's result is answered in text"""
    first = message(api.chat(TOOLS))
    calls = first.get("tool_calls") or []
    assert calls, "no tool call to answer"
    messages = [
        *TOOLS["messages"],
        {"role": "assistant", "content": first.get("content") or "",
         "tool_calls": [{"id": c["id"], "type": "function", "function": c["function"]}
                        for c in calls]},
        *[{"role": "tool", "tool_call_id": c["id"], "content": json.dumps(WEATHER["result"])}
          for c in calls],
    ]  # fmt: skip
    choice = api.chat({**TOOLS, "messages": messages})["choices"][0]
    assert choice["finish_reason"] == "stop" and not choice["message"].get("tool_calls"), choice
    assert str(WEATHER["result"]["temperature_c"]) in choice["message"]["content"]


@only("curl")
def test_no_key(api, key):
    """no key: 401"""
    with pytest.raises(HTTPError) as e:
        api.models(key=None)
    assert e.value.status == 401


def test_wrong_key(api, key):
    """a wrong key: 401"""
    wrong = "wrong-" + key
    with pytest.raises(HTTPError) as e:
        api.models(key=wrong)
    assert e.value.status == 401
    with pytest.raises(HTTPError) as e:
        api.chat({**DEEP_LEARNING, "max_tokens": 1}, key=wrong)
    assert e.value.status == 401
