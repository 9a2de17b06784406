"""decode: generate with a draft/target pair and a token tree, exactly as the target alone would."""

from typing import Callable

import torch

from sequoia_cli.engine import Layout, Sampling, generate
from sequoia_cli.errors import BadInput
from sequoia_cli.models import encode_prompt, eos_ids


def prompt_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """One generator per prompt: a run is repeatable, and its prompts draw different numbers."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + index)


def encode_prompts(tokenizer, prompts: list[str], context: int, chat_template: bool = True) -> list[list[int]]:
    """Token ids of each prompt, checked to leave room in the models' context."""
    encoded = [encode_prompt(tokenizer, prompt, chat_template) for prompt in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise BadInput(f"prompt {i + 1} is empty")
        if len(ids) >= context:
            raise BadInput(f"prompt {i + 1} has {len(ids)} tokens: past the models' context of {context}")
    return encoded


def decode_prompts(target, draft, tokenizer, prompts: list[str], encoded: list[list[int]], layout: Layout,
                   sampling: Sampling, max_new_tokens: int, seed: int,
                   on_tokens: Callable[[list[int]], None] | None = None,
                   on_prompt_done: Callable[[], None] | None = None) -> list[dict]:
    """One record per prompt (SPEC's generations format), in prompt order; `encoded` holds the
    prompts' token ids from `encode_prompts`."""
    stop = eos_ids(target, tokenizer)
    records = []
    for index, (prompt, ids) in enumerate(zip(prompts, encoded)):
        generator = prompt_generator(seed, index, target.device)
        result = generate(target, draft, ids, layout, sampling, max_new_tokens, stop, generator, on_tokens)
        records.append({
            "prompt": prompt, "output_ids": result.output_ids,
            "text": tokenizer.decode(result.output_ids, skip_special_tokens=True),
            "steps": len(result.accepted), "accepted": result.accepted, "seconds": result.seconds,
            "prompt_tokens": len(ids), "draft_forwards": result.draft_forwards, "stopped_by": result.stopped_by,
        })
        if on_prompt_done:
            on_prompt_done()
    return records


def summarize(records: list[dict], layout: Layout, expected_tokens: float | None) -> dict:
    """The run's figures: speed, forwards, and realized vs predicted tokens per step."""
    tokens = sum(len(r["output_ids"]) for r in records)
    steps = sum(r["steps"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    return {
        "prompts": len(records), "tokens": tokens, "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "target_forwards": steps, "draft_forwards": sum(r["draft_forwards"] for r in records),
        "mean_accepted": tokens / steps if steps else 0.0,
        "expected_tokens": expected_tokens, "tree_size": layout.size, "tree_depth": layout.depth,
    }
