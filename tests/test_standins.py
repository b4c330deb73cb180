"""The stand-in models: a faithful next-token machine, and Qwen3-8B's exact shape."""

from __future__ import annotations

import json

import pytest

from bench import standins
from bench.qwen3_tokenizer import IM_END, build_tokenizer
from scripts.stack.profiles import PROFILES, checkpoint_format

pytestmark = pytest.mark.unit


def test_repeated_tokens_are_told_apart_by_their_context():
    """A JSON tool call repeats `":` and ` "`; the rules use as much context as that needs."""
    tok = build_tokenizer()
    table = standins.rules(tok)
    quote = tok.encode(' "', add_special_tokens=False)
    (q,) = quote
    keys = [k for k in table if k[-1] == q]
    assert keys and all(len(k) == 4 for k in keys)  # mode + two back + one back + ` "`
    assert {tok.decode([table[k]]) for k in keys} == {"get", "Paris", "arguments"}
    assert any(len(k) == 1 for k in table)  # most tokens need no context at all


def test_a_script_that_needs_more_context_is_refused_with_the_reason():
    scripts = [standins.Script("a", "x 1 2 3 y", prompt="p"),
               standins.Script("b", "z 1 2 3 w", prompt="q")]  # fmt: skip
    with pytest.raises(standins.SpecError, match=r"scripts 'a' and 'b' both reach .* reword"):
        standins.rules(build_tokenizer(), scripts)


def test_previous_token_heads_pick_their_distance_at_every_length():
    for offset in (1, 2):
        assert standins.prev_head_scores(offset, 30.0, 1e6, 40960) > standins.ATTENTION_MARGIN


@pytest.fixture(scope="module")
def hf_model(scripted_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(scripted_model)
    return tok, AutoModelForCausalLM.from_pretrained(scripted_model, dtype=torch.float32)


def test_scripted_model_generates_the_tutorial_answer(hf_model):
    import torch

    tok, model = hf_model
    msgs = [{"role": "user", "content": "我想问你，5的阶乘是多少？"}]

    def gen(thinking, **sampling):
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=thinking,
                                      return_tensors="pt", return_dict=True)  # fmt: skip
        out = model.generate(**ids, max_new_tokens=64, **sampling)
        return tok.decode(out[0][ids["input_ids"].shape[1] :])

    greedy = gen(True, do_sample=False)
    assert greedy == f"<think>{standins.REASONING}</think>\n\n5! = 120<|im_end|>"
    torch.manual_seed(1)
    sampled = gen(True, do_sample=True, temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
    assert sampled == greedy
    assert gen(False, do_sample=False) == "5! = 120<|im_end|>"
    hello = tok("Hello there", return_tensors="pt")
    out = model.generate(**hello, max_new_tokens=8, do_sample=False)
    assert out[0][hello["input_ids"].shape[1] :].tolist() == [IM_END]


def test_scripted_model_calls_the_weather_tool_and_answers_its_result(hf_model):
    tok, model = hf_model
    by_name = {sc.name: sc for sc in standins.scripts()}
    for name in ("tool call", "tool answered", "completions"):
        sc = by_name[name]
        ids = tok(sc.prompt_text(tok), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=80, do_sample=False)
        text = tok.decode(out[0][ids["input_ids"].shape[1] :])
        assert text == sc.answer + "<|im_end|>", name
    assert standins.TOOL_CALL in by_name["tool call"].answer


def test_shape_standin_is_qwen3_8b(tmp_path):
    standins.build_shape(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    # transformers 5 writes rope_theta inside rope_parameters
    cfg.setdefault("rope_theta", cfg.get("rope_parameters", {}).get("rope_theta"))
    assert {k: cfg[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                 "num_attention_heads", "num_key_value_heads", "head_dim",
                                 "vocab_size", "max_position_embeddings", "rope_theta",
                                 "tie_word_embeddings")} == {
        "num_hidden_layers": 36, "hidden_size": 4096, "intermediate_size": 12288,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 151936, "max_position_embeddings": 40960, "rope_theta": 1000000,
        "tie_word_embeddings": False,
    }  # fmt: skip
    assert cfg["dtype"] == "bfloat16" and int(cfg["transformers_version"].split(".")[0]) >= 5
    assert not list(tmp_path.glob("*.safetensors"))
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643] and gen["temperature"] == 0.6


def test_quantized_shape_standins_carry_qwens_quantization_configs(tmp_path):
    """qwen3-8b-shape-fp8 / -awq: the same model with the quantization_config and dtype of
    Qwen/Qwen3-8B-FP8 / -AWQ (as scripts/stack/profiles.py declares them, sources there)."""
    plain = tmp_path / "bf16"
    standins.BUILDERS["qwen3-8b-shape"](plain)
    base = json.loads((plain / "config.json").read_text())
    assert "quantization_config" not in base
    for kind, profile, dtype in (("qwen3-8b-shape-fp8", "fp8", "bfloat16"),
                                 ("qwen3-8b-shape-awq", "awq", "float16")):  # fmt: skip
        out = tmp_path / kind
        standins.BUILDERS[kind](out)
        cfg = json.loads((out / "config.json").read_text())
        assert cfg.pop("quantization_config") == dict(PROFILES[profile].quantization_config)
        assert cfg.pop("dtype") == dtype and base["dtype"] == "bfloat16"
        assert cfg == {k: v for k, v in base.items() if k != "dtype"}
        assert checkpoint_format(json.loads((out / "config.json").read_text())) == profile
        assert (out / "tokenizer.json").read_bytes() == (plain / "tokenizer.json").read_bytes()
