"""The rebuilt Qwen3 tokenizer: ids, the tutorial's token counts, and our chat template against
the one Qwen publishes with Qwen3.

tests/fixtures/qwen3_published_chat_template.jinja is the `chat_template` of Qwen3's
tokenizer_config.json (https://huggingface.co/Qwen/Qwen3-0.6B, the same in every Qwen3 size),
byte for byte as llama.cpp vendors it (models/templates/Qwen-Qwen3-0.6B.jinja, read from the
fork github.com/ye-NX/llama.cpp at b354d7c9) and as github.com/wangling03/BioReason copies it
(bioreason/models/dl/chat_template_dl.py at 9153dfbd): the two copies are identical. Qwen3-8B's
later revision of the template (895c8d17) changed how it reads non-string content and
`reasoning_content`, not how it renders tools, tool calls or tool results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.qwen3_tokenizer import ADDED_IDS, build_tokenizer

pytestmark = pytest.mark.unit
PROMPT = "我想问你，5的阶乘是多少？<think>\n"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def chat_ids(tok, content, **kw):
    msgs = [{"role": "user", "content": content}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=False, **kw)


def test_added_token_ids_are_qwen3s(tok):
    expected = {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
        "<tool_call>": 151657, "</tool_call>": 151658, "<tool_response>": 151665,
        "</tool_response>": 151666, "<think>": 151667, "</think>": 151668,
    }  # fmt: skip
    for token, token_id in {**ADDED_IDS, **expected}.items():
        assert tok.convert_tokens_to_ids(token) == token_id, token
    assert len(ADDED_IDS) == 26


def test_tutorial_token_counts(tok):
    assert len(tok.encode(PROMPT)) == 12  # /v1/completions usage.prompt_tokens
    assert len(chat_ids(tok, PROMPT)) == 20  # chat usage.prompt_tokens
    assert len(chat_ids(tok, "什么是深度学习？")) == 12


def test_known_ids_and_digits_split(tok):
    assert tok.encode("5! = 120") == [20, 0, 284, 220, 16, 17, 15]
    assert tok.encode("\n\n") == [271]
    assert tok.decode(tok.encode(PROMPT)) == PROMPT


def test_chat_template_thinking_switch_and_history(tok):
    msgs = [{"role": "user", "content": "你是谁？"}]
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                  enable_thinking=False)  # fmt: skip
    assert (
        off
        == "<|im_start|>user\n你是谁？<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    on = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert on.endswith("<|im_start|>assistant\n")
    history = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\nold\n</think>\n\nA"},
        {"role": "user", "content": "b"},
    ]
    text = tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nS<|im_end|>\n")
    assert "old" not in text and "<|im_start|>assistant\nA<|im_end|>" in text


def test_chat_template_tools(tok):
    tools = [{"type": "function", "function": {"name": "fact", "parameters": {}}}]
    msgs = [
        {"role": "user", "content": "5!"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "fact", "arguments": {"n": 5}}}]},
        {"role": "tool", "content": "120"},
    ]  # fmt: skip
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert "<tools>\n" in text and '"name": "fact"' in text
    assert '<tool_call>\n{"name": "fact", "arguments": {"n": 5}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n120\n</tool_response><|im_end|>" in text


PUBLISHED = Path(__file__).parent / "fixtures" / "qwen3_published_chat_template.jinja"
WEATHER = json.loads((Path(__file__).parents[1] / "smoke" / "requests.json").read_text())["weather"]
CALL = {"id": "call_0", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
CONVERSATIONS = {
    "tools offered": [{"role": "user", "content": WEATHER["question"]}],
    "tools and a system prompt": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": WEATHER["question"]},
    ],
    "tool result": [
        {"role": "user", "content": WEATHER["question"]},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_0", "content": json.dumps(WEATHER["result"])},
    ],
    "two calls, two results, reasoning kept after the query": [
        {"role": "user", "content": "Paris and Rome?"},
        {"role": "assistant", "content": "Checking both.", "reasoning_content": "two cities",
         "tool_calls": [CALL, {"type": "function", "function": {"name": "get_weather",
                                                               "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rain"},
    ],
    "an earlier turn's reasoning dropped": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\nold\n</think>\n\nA"},
        {"role": "user", "content": "b"},
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("thinking", [None, False], ids=["thinking", "no-thinking"])
def test_tools_prompts_render_exactly_as_qwen3s_published_template(tok, name, thinking):
    published = PUBLISHED.read_text()
    assert published.startswith("{%- if tools %}") and "<tool_call>" in published
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    for tools in (WEATHER["tools"], None):
        for gen in (True, False):
            ours = tok.apply_chat_template(CONVERSATIONS[name], tools=tools, tokenize=False,
                                           add_generation_prompt=gen, **kwargs)  # fmt: skip
            theirs = tok.apply_chat_template(CONVERSATIONS[name], tools=tools, tokenize=False,
                                             add_generation_prompt=gen, chat_template=published,
                                             **kwargs)  # fmt: skip
            assert ours == theirs, (tools is not None, gen)
    rendered = tok.apply_chat_template(CONVERSATIONS["tools offered"], tools=WEATHER["tools"],
                                       tokenize=False, add_generation_prompt=True)  # fmt: skip
    assert (
        "<tools>\n" + json.dumps(WEATHER["tools"][0], ensure_ascii=False) + "\n</tools>" in rendered
    )
