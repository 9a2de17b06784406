"""optimize: the tree size and depth with the best predicted speed on the profiled machine, by
the cost model of `sequoia_cli.cost`."""

from typing import NamedTuple

import numpy as np

from sequoia_cli.acceptance import plan_by_levels
from sequoia_cli.artifacts import timings, tree_artifact
from sequoia_cli.cost import step_ms, step_ms_of
from sequoia_cli.dynamic_plan import plan_growth
from sequoia_cli.errors import BadInput
from sequoia_cli.tree import best_tree, depth_bound, depths, expected_tokens, level_summary, tree_table

METHODS = ("sequoia", "dynamic")


class Searched(NamedTuple):
    """The DP's best candidate for some acceptance rows (its tree first, as `plan_by_levels`
    reads it), and every candidate weighed."""

    parents: list[int]
    candidates: list[dict]


class Picked(NamedTuple):
    """The planned tree, every candidate weighed, and the acceptance rows the tree meets."""

    parents: list[int]
    candidates: list[dict]
    rows: list


def optimize(acceptance: dict, profile: dict, max_size: int | None = None, max_depth: int | None = None,
             positional: bool = False, method: str = "sequoia") -> dict:
    """A tree artifact of the candidate with the best predicted speedup, with the `plan` that
    weighed every (size, depth) the DP gives up to the bounds (by level where the acceptance has
    rows by level or ranks, unless `positional`: `acceptance.plan_by_levels`). With method
    `dynamic`, also the `dynamic` section trees grown per step follow (`dynamic_plan.plan_growth`):
    it needs the acceptance file's calibration and the profile's draft timings. Its caps are the
    level widths of the tree the DP picks with the target's time alone (a grown tree drafts a
    level only where that level is worth its draft forwards, so the draft's cost is weighed per
    step, not up front) or of the static pick, whichever is predicted faster; where neither
    beats the static tree, the section says so and decode runs the static tree."""
    if method not in METHODS:
        raise BadInput(f"method '{method}' is not one of {', '.join(METHODS)}", "method")
    target_ms = timings(profile["target"])
    draft_ms = timings(profile["draft"]) if profile.get("draft") else None
    if method == "dynamic" and acceptance.get("calibration") is None:
        raise BadInput("the acceptance file has no calibration (measure-acceptance records one now): measure"
                       " acceptance again for method dynamic", "acceptance", "method")
    if method == "dynamic" and draft_ms is None:
        raise BadInput("the profile has no draft timings: dynamic trees weigh every draft forward, so profile-hw"
                       " the pair", "profile", "method")
    largest = max(target_ms)
    if max_size is None:
        max_size = largest
    if max_size < 1:
        raise BadInput(f"max_size is {max_size}: a tree has at least 1 node", "max_size")
    if max_size > largest:
        raise BadInput(f"max_size {max_size} is past the largest profiled target count {largest}:"
                       f" run profile-hw with max_tokens {max_size}", "max_size", "max_tokens")
    max_depth = depth_bound(max_size, max_depth)

    def pick(draft: dict | None) -> Picked:
        """The plan with the draft's forwards priced by `draft` (None: free)."""
        searched, rows = plan_by_levels(
            acceptance, positional, lambda planned: _search(planned, max_size, max_depth, target_ms, draft),
            lambda tree, met: expected_tokens(tree, met) / step_ms(tree, target_ms, draft, met))
        return Picked(searched.parents, searched.candidates, rows)

    parents, candidates, rows = pick(draft_ms)
    # The chosen tree priced with the rows it meets: its candidate's figures once planning settled.
    expected, cost = expected_tokens(parents, rows), step_ms(parents, target_ms, draft_ms, rows)
    plan = {
        "size": len(parents), "depth": max(depths(parents)), "speedup": expected * target_ms[1] / cost,
        "ms_per_token": cost / expected, "step_ms": cost,
        "autoregressive_ms_per_token": target_ms[1],
        "draft_counted": draft_ms is not None,
        "device": profile.get("device"), "dtype": profile.get("dtype"), "engine": profile.get("engine", "eager"),
        **{f"{role}_setup": profile[role]["setup"] for role in ("target", "draft")
           if (profile.get(role) or {}).get("setup")},
        "candidates": sorted(candidates, key=lambda c: -c["speedup"]),
    }
    tree = tree_artifact(parents, acceptance, expected, positional, plan, rows)
    if method == "dynamic":
        caps = pick(None).parents
        tree["dynamic"] = plan_growth([caps, parents], acceptance, target_ms, draft_ms, plan["ms_per_token"])
    return tree


def _search(planned, max_size: int, max_depth: int, target_ms: dict, draft_ms: dict | None) -> Searched:
    """The best candidate's tree and every candidate for the acceptance rows `planned`."""
    table = tree_table(planned, max_size, max_depth)
    candidates, bounds, memo = [], {}, {}
    for size in range(1, max_size + 1):
        for depth in range(min(max_depth, size - 1) + 1):
            if not np.isfinite(table.expected[depth, size]):
                continue
            # Each candidate is priced from its level widths, read off the DP's choices: building
            # every tree would take seconds for a profile of 1024 tokens.
            nodes, reach = level_summary(table, size, depth, memo)
            actual_depth = int(np.flatnonzero(nodes)[-1])
            if (size, actual_depth) in bounds:
                continue  # a looser bound gave the same tree
            widths = [int(n) for n in nodes[:actual_depth + 1]]
            bottom = float(reach[actual_depth]) if actual_depth else 0.0
            cost = step_ms_of(widths, bottom, target_ms, draft_ms)
            expected = float(table.expected[depth, size])
            bounds[size, actual_depth] = depth
            candidates.append({
                "size": size, "depth": actual_depth, "expected_tokens": expected,
                "step_ms": cost, "ms_per_token": cost / expected,
                "speedup": expected * target_ms[1] / cost,
            })
    best = max(candidates, key=lambda c: c["speedup"])
    return Searched(best_tree(table, best["size"], bounds[best["size"], best["depth"]]), candidates)
