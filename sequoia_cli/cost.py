"""The cost model the optimizer plans with (the paper's, with the draft's first level as the decode
loop pays it): a step with tree T costs target_ms(size) plus the draft's forwards. The draft reads each
level l < depth to propose the next one, so a wide level costs more than one token; level 0 reads
the root and, when the step accepted a node of the deepest level (which the draft never read),
that node too: 2 tokens with the probability that the walk reaches the deepest level, else 1.
Predicted speedup over autoregressive decoding = E(T) * target_ms(1) / step_ms(T)."""

import numpy as np

from sequoia_cli.tree import depths, expected_tokens, level_widths, path_probabilities


def interpolate(ms: dict[int, float], count: int) -> float:
    """Forward time for `count` tokens: linear between measured counts, linear beyond the last
    two (a forward never gets cheaper with more tokens, so never below the last point)."""
    counts, values = list(ms), list(ms.values())
    if count <= counts[-1] or len(counts) == 1:
        return float(np.interp(count, counts, values))
    slope = max(0.0, (values[-1] - values[-2]) / (counts[-1] - counts[-2]))
    return values[-1] + slope * (count - counts[-1])


def reaches_bottom(parents: list[int], acceptance) -> float:
    """Probability that a step accepts a node of the tree's deepest level."""
    node_depths = depths(parents)
    bottom = max(node_depths)
    return sum(p for p, d in zip(path_probabilities(parents, acceptance), node_depths) if d == bottom and d > 0)


def step_ms(parents: list[int], target_ms: dict[int, float], draft_ms: dict[int, float] | None,
            acceptance=None) -> float:
    """One step with this tree: the target reads all nodes, the draft reads each level but the
    last, its first level 1 token or 2 (as above; without `acceptance`, 1). No draft timings: the
    draft counts as free."""
    bottom = reaches_bottom(parents, acceptance) if acceptance is not None else 0.0
    return step_ms_of(level_widths(parents), bottom, target_ms, draft_ms)


def step_ms_of(widths: list[int], bottom: float, target_ms: dict[int, float],
               draft_ms: dict[int, float] | None) -> float:
    """`step_ms` of a tree given by its level widths and the probability `bottom` that a step
    reaches its deepest level."""
    draft_cost = 0.0
    if draft_ms and len(widths) > 1:
        first = (1.0 - bottom) * interpolate(draft_ms, 1) + bottom * interpolate(draft_ms, 2)
        draft_cost = first + sum(interpolate(draft_ms, width) for width in widths[1:-1])
    return interpolate(target_ms, sum(widths)) + draft_cost


def predicted_speedup(parents: list[int], acceptance, target_ms: dict[int, float],
                      draft_ms: dict[int, float] | None) -> float:
    return expected_tokens(parents, acceptance) * target_ms[1] / step_ms(parents, target_ms, draft_ms, acceptance)
