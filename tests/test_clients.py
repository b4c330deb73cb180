"""Third-party clients as their users call them, pinned in requirements/test.txt, against the
native gateway in front of the real CPU vLLM (REASONING_FIELDS=both, the default): LiteLLM's
`openai/` provider (completion, streaming, and the thinking it shows as `reasoning_content`:
1.110 reads vLLM's `reasoning` too, litellm #26501, so that check holds under every
REASONING_FIELDS) and LangChain's ChatOpenAI (invoke, stream, bind_tools producing the
stand-in's tool call). Missing, they skip, which CI=true turns into a failure."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import ROOT
from tests.test_gateway import Gateway, nginx_or_skip

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of it at import
litellm = pytest.importorskip("litellm")
langchain_openai = pytest.importorskip("langchain_openai")

pytestmark = pytest.mark.native
MODEL = "Qwen3-8B"
THINK = "我想问你，5的阶乘是多少？<think>\n"  # the scripted stand-in reasons, then says 5! = 120
WEATHER = json.loads((ROOT / "smoke" / "requests.json").read_text())["weather"]


@pytest.fixture(scope="module")
def gateway(vllm_server, tmp_path_factory):
    nginx_or_skip()
    gw = Gateway(tmp_path_factory.mktemp("gateway-clients"), vllm_server["base_url"][7:],
                 [vllm_server["key"].strip()]).start()  # fmt: skip
    try:
        yield gw
    finally:
        gw.stop()


def litellm_call(gateway, **kw):
    return litellm.completion(
        model=f"openai/{MODEL}", api_base=gateway.url + "/v1", api_key=gateway.keys[0],
        messages=[{"role": "user", "content": THINK}], timeout=300, num_retries=0, **kw,
    )  # fmt: skip


def test_litellm_completion_and_its_reasoning(gateway):
    m = litellm_call(gateway).choices[0].message
    assert "120" in m.content and "</think>" not in m.content, m
    assert m.reasoning_content and m.reasoning_content not in m.content, m  # litellm #26501


def test_litellm_streaming(gateway):
    whole = litellm_call(gateway).choices[0].message
    content, reasoning = "", ""
    for chunk in litellm_call(gateway, stream=True):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
    assert "120" in content and content == whole.content
    assert reasoning == whole.reasoning_content


@pytest.fixture(scope="module")
def chat(gateway):
    return langchain_openai.ChatOpenAI(
        model=MODEL, base_url=gateway.url + "/v1", api_key=gateway.keys[0], max_retries=0,
        timeout=300,
    )  # fmt: skip


def test_langchain_invoke_and_stream(chat):
    answer = chat.invoke(THINK)
    assert "120" in answer.content and "</think>" not in answer.content, answer
    streamed = "".join(chunk.content for chunk in chat.stream(THINK))
    assert streamed == answer.content


def test_langchain_bind_tools_calls_get_weather(chat):
    answer = chat.bind_tools(WEATHER["tools"]).invoke(WEATHER["question"])
    (call,) = answer.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}, answer
    assert call["id"], answer
