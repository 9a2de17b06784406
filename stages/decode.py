"""decode: generate with a draft/target pair and a token tree, exactly as the target alone would."""

from typing import Callable

from sequoia_cli.engine import Layout, Sampling, chain_parents, generate, input_device, prompt_generator
from sequoia_cli.errors import BadInput
from sequoia_cli.models import eos_ids
from sequoia_cli.tree import expected_tokens

# Every method runs through the same loop: sequoia, specinfer and topk on the tree file's shape
# (they differ in how children are drawn and verified), chain on a chain of --chain-length
# tokens, autoregressive on a tree of size 1.
METHODS = ("sequoia", "specinfer", "topk", "chain", "autoregressive")


def method_parents(method: str, tree: dict | None, chain_length: int | None) -> list[int]:
    """The tree a method decodes with, from the tree artifact or the chain length it takes."""
    if method not in METHODS:
        raise BadInput(f"--method '{method}' is not one of {', '.join(METHODS)}")
    if method == "chain":
        if chain_length is None or chain_length < 1 or tree:
            raise BadInput("--method chain takes --chain-length K (K >= 1) and no --tree")
        return chain_parents(chain_length)
    if method == "autoregressive":
        if tree or chain_length:
            raise BadInput("--method autoregressive takes no --tree or --chain-length")
        return [-1]
    if not tree or chain_length:
        raise BadInput(f"--method {method} takes --tree (a sequoia-tree/1 file) and no --chain-length")
    return tree["parents"]


def verification(method: str) -> str:
    """The verification rule of a method: a chain is verified as a tree of one child per node."""
    return "sequoia" if method in ("chain", "autoregressive") else method


def decode_prompt(target, draft, tokenizer, prompt: str, ids: list[int], index: int, layout: Layout,
                  sampling: Sampling, max_new_tokens: int, seed: int,
                  on_tokens: Callable[[list[int]], None] | None = None, expected: bool = False) -> dict:
    """One prompt's generation record (SPEC's generations format); `index` is its place in the
    run, which picks its random stream. `expected` adds each step's expected tokens."""
    generator = prompt_generator(seed, index, input_device(target))
    result = generate(target, draft if layout.depth else None, ids, layout, sampling, max_new_tokens,
                      eos_ids(target, tokenizer), generator, on_tokens, expected)
    record = {
        "prompt": prompt, "output_ids": result.output_ids,
        "text": tokenizer.decode(result.output_ids, skip_special_tokens=True),
        "steps": len(result.accepted), "accepted": result.accepted, "seconds": result.seconds,
        "prefill_seconds": result.prefill_seconds, "step_tokens": sum(result.step_tokens),
        "prompt_tokens": len(ids), "draft_forwards": result.draft_forwards, "stopped_by": result.stopped_by,
    }
    if expected:
        record["expected"] = result.expected
    return record


def decode_prompts(target, draft, tokenizer, prompts: list[str], encoded: list[list[int]], layout: Layout,
                   sampling: Sampling, max_new_tokens: int, seed: int,
                   on_tokens: Callable[[list[int]], None] | None = None,
                   on_prompt_done: Callable[[], None] | None = None) -> list[dict]:
    """One record per prompt, in prompt order; `encoded` holds the prompts' checked token ids."""
    records = []
    for index, (prompt, ids) in enumerate(zip(prompts, encoded)):
        records.append(decode_prompt(target, draft, tokenizer, prompt, ids, index, layout, sampling,
                                     max_new_tokens, seed, on_tokens))
        if on_prompt_done:
            on_prompt_done()
    return records


def predictions(tree: dict | None, parents: list[int]) -> dict:
    """Tokens per step the tree file's acceptance predicts for `parents`: with the single vector
    (the paper's positional assumption) and, where the file has them, with the rows by level."""
    out = {}
    if tree and tree.get("acceptance"):
        out["predicted_positional"] = expected_tokens(parents, tree["acceptance"])
        if tree.get("acceptance_by_level"):
            out["predicted_by_level"] = expected_tokens(parents, tree["acceptance_by_level"])
    return out


def summarize(records: list[dict], layout: Layout, expected_tokens: float | None,
              predicted: dict | None = None) -> dict:
    """The run's figures: speed, forwards, and realized vs predicted tokens per step."""
    tokens = sum(len(r["output_ids"]) for r in records)
    steps = sum(r["steps"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    prefill = sum(r["prefill_seconds"] for r in records)
    stepping = seconds - prefill
    return {
        "prompts": len(records), "tokens": tokens, "seconds": seconds, "prefill_seconds": prefill,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        # What the cost model predicts: the steps alone, the prompts' prefill left out.
        "step_tokens_per_second": tokens / stepping if stepping > 0 else 0.0,
        "target_forwards": steps, "draft_forwards": sum(r["draft_forwards"] for r in records),
        "mean_accepted": tokens / steps if steps else 0.0,
        # Before the cut at EOS or the budget: the figure the predictions are set against.
        "mean_step_tokens": sum(r["step_tokens"] for r in records) / steps if steps else 0.0,
        "expected_tokens": expected_tokens, **(predicted or {}), "tree_size": layout.size, "tree_depth": layout.depth,
    }
