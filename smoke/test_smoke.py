"""The tutorial's checks through the openai SDK, against a running endpoint.

Same settings as smoke.sh: SMOKE_BASE_URL, SMOKE_MODEL, SMOKE_API_KEY / SMOKE_API_KEY_FILE,
SMOKE_CHECK_ANSWERS=0 for dummy weights (protocol checks only).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import openai
import pytest

BASE = os.environ.get("SMOKE_BASE_URL", "http://localhost:8000").rstrip("/")
MODEL = os.environ.get("SMOKE_MODEL", "Qwen3-8B")
ANSWERS = os.environ.get("SMOKE_CHECK_ANSWERS", "1") == "1"
PROMPT = "我想问你，5的阶乘是多少？<think>\n"
LONG = int(os.environ.get("SMOKE_MAX_TOKENS") or 4096)  # thinking answers
SHORT = int(os.environ.get("SMOKE_MAX_TOKENS") or 1024)


def _key() -> str:
    if os.environ.get("SMOKE_API_KEY"):
        return os.environ["SMOKE_API_KEY"]
    path = os.environ.get("SMOKE_API_KEY_FILE")
    if not path:
        return ""
    lines = (k.strip() for k in Path(path).read_text().splitlines())
    return next((k for k in lines if k and not k.startswith("#")), "")  # the first key


KEY = _key()
needs_answers = pytest.mark.skipif(not ANSWERS, reason="SMOKE_CHECK_ANSWERS=0 (dummy weights)")


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    # the tutorial passes a placeholder key when the server has none
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY or "sk-xxx", timeout=600, max_retries=0)


def reasoning_of(message) -> str | None:
    """Today's vLLM returns `reasoning`; servers from the tutorial's time `reasoning_content`."""
    extra = message.model_extra or {}
    return extra.get("reasoning") or extra.get("reasoning_content")


def test_models_lists_the_served_name(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert (models[0].model_extra or {}).get("max_model_len", 0) > 0


def test_completions_tutorial_prompt(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=SHORT, temperature=0)
    assert r.usage.prompt_tokens == 12
    assert r.usage.completion_tokens > 0
    if ANSWERS:
        assert "120" in r.choices[0].text


def test_chat_thinking_separates_reasoning(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=LONG
    )
    assert r.usage.prompt_tokens == 20
    msg = r.choices[0].message
    if ANSWERS:
        assert reasoning_of(msg), "thinking mode returned no reasoning"
        assert "</think>" not in (msg.content or "")
        assert "120" in msg.content


def test_chat_without_thinking_has_no_reasoning(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=SHORT,
        temperature=0.7,
        top_p=0.8,
        extra_body={"top_k": 20, "min_p": 0, "chat_template_kwargs": {"enable_thinking": False}},
    )
    msg = r.choices[0].message
    assert not reasoning_of(msg)
    if ANSWERS:
        assert "120" in msg.content


def test_chat_prompt_token_count(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "什么是深度学习？"}], max_tokens=16
    )
    assert r.usage.prompt_tokens == 12


def test_streaming_reasoning_before_content(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=LONG,
        stream=True,
        stream_options={"include_usage": True},
    )
    kinds, content, finish, usage = [], "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if reasoning_of(delta):
            kinds.append("reasoning")
        if delta.content:
            kinds.append("content")
            content += delta.content
        finish = chunk.choices[0].finish_reason or finish
    assert finish in ("stop", "length")
    assert usage is not None and usage.prompt_tokens == 20
    if ANSWERS:
        assert "reasoning" in kinds and "content" in kinds
        first_content = kinds.index("content")
        assert "reasoning" not in kinds[first_content:], "reasoning arrived after content"
        assert "120" in content


@pytest.mark.skipif(not KEY, reason="no API key given (SMOKE_API_KEY / SMOKE_API_KEY_FILE)")
@pytest.mark.parametrize("header", [None, "Bearer wrong-key"], ids=["no-key", "wrong-key"])
def test_key_is_required(header):
    headers = {"Authorization": header} if header else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    for method, path, payload in (("GET", "/v1/models", None),
                                  ("POST", "/v1/chat/completions", body)):  # fmt: skip
        r = httpx.request(method, BASE + path, json=payload, headers=headers, timeout=30)
        assert r.status_code == 401, f"{method} {path} without a valid key gave {r.status_code}"
