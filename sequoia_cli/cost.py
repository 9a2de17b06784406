"""The cost model the optimizer plans with (SPEC): a step with tree T costs target_ms(size) plus,
for each level l < depth, draft_ms(width of level l): the draft reads a level's nodes to propose
the next level, so a wide level costs more than one token. Predicted speedup over autoregressive
decoding = E(T) * target_ms(1) / step_ms(T)."""

import numpy as np

from sequoia_cli.tree import expected_tokens, level_widths


def interpolate(ms: dict[int, float], count: int) -> float:
    """Forward time for `count` tokens: linear between measured counts, linear beyond the last
    two (a forward never gets cheaper with more tokens, so never below the last point)."""
    counts, values = list(ms), list(ms.values())
    if count <= counts[-1] or len(counts) == 1:
        return float(np.interp(count, counts, values))
    slope = max(0.0, (values[-1] - values[-2]) / (counts[-1] - counts[-2]))
    return values[-1] + slope * (count - counts[-1])


def step_ms(parents: list[int], target_ms: dict[int, float], draft_ms: dict[int, float] | None) -> float:
    """One step with this tree: the target reads all nodes, the draft reads each level but the
    last (no draft timings: the draft counts as free)."""
    widths = level_widths(parents)
    draft_cost = sum(interpolate(draft_ms, width) for width in widths[:-1]) if draft_ms else 0.0
    return interpolate(target_ms, len(parents)) + draft_cost


def predicted_speedup(parents: list[int], acceptance: list[float], target_ms: dict[int, float],
                      draft_ms: dict[int, float] | None) -> float:
    return expected_tokens(parents, acceptance) * target_ms[1] / step_ms(parents, target_ms, draft_ms)
