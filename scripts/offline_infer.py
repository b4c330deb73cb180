"""The tutorial's vllm_model.py: offline inference with `LLM` + `SamplingParams`, thinking on and
off, each with Qwen3's recommended sampling. Uses the downloaded model from the settings and the
server's engine arguments (scripts/stack/vllm_args.py, read by vLLM's EngineArgs here), profile
included.

    python -m scripts.offline_infer ["your prompt"]
"""

from __future__ import annotations

import sys

from scripts.stack import manifest
from scripts.stack.settings import Settings, SettingsError, load
from scripts.stack.vllm_args import checkpoint_problem, engine_args

# Qwen3's recommended sampling (the tutorial's comments): thinking vs non-thinking mode
SAMPLING = {
    True: {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0},
    False: {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0},
}
STOP_TOKEN_IDS = [151645, 151643]  # <|im_end|>, <|endoftext|>


def llm_kwargs(s: Settings) -> dict:
    """`vllm.LLM(**llm_kwargs(s))` for offline inference: the same engine arguments as the
    server, read by vLLM's own EngineArgs parser (only the values that differ from vLLM's
    defaults are passed)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    ours = EngineArgs.from_cli_args(parser.parse_args(engine_args(s)))
    default = EngineArgs.from_cli_args(parser.parse_args(["--model", str(s.model_path)]))
    return {
        f.name: getattr(ours, f.name)
        for f in dataclasses.fields(ours)
        if f.name == "model" or getattr(ours, f.name) != getattr(default, f.name)
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prompt = argv[0] if argv else "我想问你，5的阶乘是多少？"
    try:
        s = load()
        if s.load_format != "dummy":
            manifest.require_complete(s.model_path)
    except (SettingsError, manifest.NotReady) as e:
        print(f"offline_infer: {e}", file=sys.stderr)
        return 2
    if problem := checkpoint_problem(s):
        print(f"offline_infer: {problem}", file=sys.stderr)
        return 2
    from vllm import LLM, SamplingParams

    llm = LLM(**llm_kwargs(s))  # the server's engine arguments (scripts/stack/vllm_args.py)
    tokenizer = llm.get_tokenizer()
    for thinking in (True, False):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=thinking,
        )
        params = SamplingParams(
            **SAMPLING[thinking], max_tokens=4096, stop_token_ids=STOP_TOKEN_IDS
        )
        for out in llm.generate([text], params):
            print(f"[enable_thinking={thinking}] Prompt: {out.prompt!r}")
            print(f"[enable_thinking={thinking}] Response: {out.outputs[0].text!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
