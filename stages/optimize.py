"""optimize: the tree size and depth with the best predicted speed on the profiled machine.

Cost model (SPEC): a step with tree T costs target_ms(size) plus, for each level l < depth,
draft_ms(width of level l): the draft reads a level's nodes to propose the next level, so a wide
level costs more than one token. Speedup over autoregressive = E(T) * target_ms(1) / step_ms.
"""

import numpy as np

from sequoia_cli.artifacts import timings
from sequoia_cli.errors import BadInput
from sequoia_cli.tree import best_tree, level_widths, tree_table
from stages.build_tree import provenance, tree_artifact


def interpolate(ms: dict[int, float], count: int) -> float:
    """Forward time for `count` tokens: linear between measured counts, linear beyond the last
    two (a forward never gets cheaper with more tokens, so never below the last point)."""
    counts, values = list(ms), list(ms.values())
    if count <= counts[-1] or len(counts) == 1:
        return float(np.interp(count, counts, values))
    slope = max(0.0, (values[-1] - values[-2]) / (counts[-1] - counts[-2]))
    return values[-1] + slope * (count - counts[-1])


def step_ms(parents: list[int], target_ms: dict[int, float], draft_ms: dict[int, float] | None) -> float:
    """SPEC's cost of one step with this tree: the target reads all nodes, the draft reads each
    level but the last (no draft timings: the draft counts as free)."""
    widths = level_widths(parents)
    draft_cost = sum(interpolate(draft_ms, width) for width in widths[:-1]) if draft_ms else 0.0
    return interpolate(target_ms, len(parents)) + draft_cost


def optimize(acceptance_artifact: dict, profile: dict, max_size: int | None = None,
             max_depth: int | None = None) -> dict:
    target_ms = timings(profile["target"])
    draft_ms = timings(profile["draft"]) if profile.get("draft") else None
    largest = max(target_ms)
    if max_size is None:
        max_size = largest
    if max_size < 1:
        raise BadInput(f"--max-size is {max_size}: a tree has at least 1 node")
    if max_size > largest:
        raise BadInput(f"--max-size {max_size} is past the largest profiled target count {largest}:"
                       f" run profile-hw with --max-tokens {max_size}")
    max_depth = max_size - 1 if max_depth is None else max_depth
    if max_depth < 0:
        raise BadInput(f"--max-depth is {max_depth}: depth is at least 0")

    acceptance = acceptance_artifact["acceptance"]
    table = tree_table(acceptance, max_size, max_depth)
    autoregressive_ms = target_ms[1]
    candidates, trees = [], {}
    for size in range(1, max_size + 1):
        for depth in range(min(max_depth, size - 1) + 1):
            if not np.isfinite(table.expected[depth, size]):
                continue
            parents = best_tree(table, size, depth)
            actual_depth = len(level_widths(parents)) - 1
            if (size, actual_depth) in trees:
                continue  # a looser bound gave the same tree
            cost = step_ms(parents, target_ms, draft_ms)
            expected = float(table.expected[depth, size])
            trees[size, actual_depth] = parents
            candidates.append({
                "size": size, "depth": actual_depth, "expected_tokens": expected,
                "step_ms": cost, "ms_per_token": cost / expected,
                "speedup": expected * autoregressive_ms / cost,
            })
    best = max(candidates, key=lambda c: c["speedup"])
    plan = {
        "size": best["size"], "depth": best["depth"], "speedup": best["speedup"],
        "ms_per_token": best["ms_per_token"], "step_ms": best["step_ms"],
        "autoregressive_ms_per_token": autoregressive_ms,
        "draft_counted": draft_ms is not None,
        "device": profile.get("device"), "dtype": profile.get("dtype"),
        "candidates": sorted(candidates, key=lambda c: -c["speedup"]),
    }
    return tree_artifact(trees[best["size"], best["depth"]], acceptance, best["expected_tokens"],
                         source=provenance(acceptance_artifact), plan=plan)
