"""The rebuilt Qwen3 tokenizer: ids and the tutorial's token counts."""

from __future__ import annotations

import pytest

from tests.fixtures.qwen3_tokenizer import ADDED_IDS, build_tokenizer

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
