"""The statistics of acceptance: the vector and its rows by level from counts, and the rows a tree
meets in decode.

Counts are kept by level and rank (rank 0: none of the `width` children accepted): level 1 right
after a rejection, level l after l - 1 accepted positions, the last level standing for every
deeper one. Shards of one measurement add their counts, so a merged file is the measurement of all
their prompts.

`measure-acceptance` keeps, for every continuation position, the rank of the child the target
accepted (0: none of the `width`). Walking a tree down those ranks, step by step, is what decode
does on that continuation: a step goes down while the accepted rank is one of the node's
children, and the next step's root is the token after the last accepted one, whether the step
ended at a rejection or at a leaf. The ranks seen at each depth of the walk are the rows by level
of that tree. They differ from rows counted by run length (how many draft tokens were accepted
in a row): a step that ends at a leaf starts the next one after an acceptance, and a narrow tree
rejects ranks a run would count as accepted. The DP's tree changes the rows it is planned from,
so `plan_by_levels` alternates the two until the tree stays the same; where they go round in a
cycle instead, it keeps the tree the rows it meets rate best. `replayed` counts the tokens per step of the walk:
what greedy decode realizes on the measured continuations, beside which a prediction from the
rows shows the model's own error, apart from any difference between prompts.

The calibration says how acceptance depends on the draft's own probability of a child: each child
verification tried (those before the accepted one, and the accepted one) is counted in the bin of
its draft probability, with whether it was accepted. Kept as counts, it merges exactly too; a
dynamic tree reads a child's chance of acceptance from it (`dynamic.filled_rates`).
"""

import math
from collections.abc import Callable

from sequoia_cli.artifacts import acceptance_artifact
from sequoia_cli.tree import depths
from sequoia_cli.tree import ranks as child_ranks

LEVELS = 4  # levels 1, 2, 3 and 4 or deeper: deeper rows would rest on few positions
ROUNDS = 6  # planning rounds at most: a plan settles in a few, or goes round in a cycle
# Positions, spread as the whole vector, added to each level's counts: a level seen a few times
# (on code a rejection is rare, so level 1 may have a handful of positions) stays near the whole
# vector instead of steering the DP.
LEVEL_PRIOR = 16
# Bins [edge_i, edge_i+1) of the draft's probability (the last closed at 1): finer near 0, where
# most drafted children lie, and near 1, where a confident draft's acceptance changes fastest.
CALIBRATION_EDGES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def shrunk_rows(counts: list[list[int]], acceptance: list[float]) -> list[list[float]]:
    """Each row of counts (by rank, rank 0: none accepted) as a vector, its counts plus
    LEVEL_PRIOR positions distributed as `acceptance` (the whole vector)."""
    return [[(c + LEVEL_PRIOR * a) / (sum(row) + LEVEL_PRIOR) for c, a in zip(row[1:], acceptance)] for row in counts]


def acceptance_from_counts(counts: list[list[int]], mode: str, temperature: float, top_p: float, width: int,
                           **run) -> dict:
    """The acceptance artifact of counts[level - 1][rank] (rank 0: none accepted): the vector over
    every level, the rows by level down to the deepest measured (the last standing for every
    deeper level, each shrunk toward the whole vector: `shrunk_rows`), each with its samples and
    the standard errors of its raw frequencies, and the counts themselves."""
    def vector(row: list[int]) -> tuple[list[float], list[float]]:
        samples = sum(row)
        acceptance = [c / samples if samples else 0.0 for c in row[1:]]
        return acceptance, [math.sqrt(a * (1 - a) / samples) if samples else 0.0 for a in acceptance]

    total = [sum(column) for column in zip(*counts)]
    samples = sum(total)
    acceptance, stderr = vector(total)
    levels = [row for row in counts if sum(row)]
    by_level = {"acceptance_by_level": shrunk_rows(levels, acceptance), "samples_by_level": [sum(r) for r in levels],
                "stderr_by_level": [vector(row)[1] for row in levels]} if levels else {}
    return acceptance_artifact(mode, temperature, top_p, width, acceptance,
                               rejected_all=total[0] / samples if samples else 1.0, samples=samples, stderr=stderr,
                               **by_level, counts=counts, **run)


def merged_counts(shards: list[dict]) -> list[list[int]]:
    """counts[level][rank] of several measurements together."""
    return [[sum(values) for values in zip(*rows)] for rows in zip(*(s["counts"] for s in shards))]


def calibration_from_counts(edges: list[float], tried: list[int], accepted: list[int]) -> dict:
    """The artifact's calibration from the counts per bin of `edges`: each bin's acceptance
    (accepted / tried) and its standard error, null for a bin no child fell in (no data, which a
    0.0 would hide as never accepted)."""
    acceptance = [a / n if n else None for n, a in zip(tried, accepted)]
    stderr = [math.sqrt(a * (1 - a) / n) if n else None for n, a in zip(tried, acceptance)]
    return {"edges": list(edges), "tried": list(tried), "accepted": list(accepted), "acceptance": acceptance,
            "stderr": stderr}


def merged_calibration(shards: list[dict]) -> dict:
    """The calibration of several measurements together (each has one, of the same edges)."""
    parts = [s["calibration"] for s in shards]
    tried, accepted = ([sum(column) for column in zip(*(part[key] for part in parts))] for key in ("tried", "accepted"))
    return calibration_from_counts(parts[0]["edges"], tried, accepted)


def planning_acceptance(artifact: dict, positional: bool = False):
    """What the DP plans with: the rows by level where the artifact has them (unless
    `positional`), else the single vector."""
    if not positional and artifact.get("acceptance_by_level"):
        return artifact["acceptance_by_level"]
    return artifact["acceptance"]


def decode_steps(parents: list[int], ranks: list[int]) -> list[tuple[list[int], int]]:
    """Decode's steps down one continuation's accepted ranks: per step, the ranks it met at levels
    1, 2, ... and how many of them it accepted (it adds that many tokens plus the target's own)."""
    children = [{} for _ in parents]
    for node, rank in enumerate(child_ranks(parents)):
        if node:
            children[parents[node]][rank] = node
    steps, start = [], 0
    while start < len(ranks):
        node, position = 0, start
        while position < len(ranks) and children[node]:
            if ranks[position] not in children[node]:
                break
            node, position = children[node][ranks[position]], position + 1
        met = ranks[start:position + 1] if children[node] else ranks[start:position]
        steps.append((met, position - start))
        start = position + 1  # the target's own token at `position` is the next root
    return steps


def replayed(parents: list[int], ranks: list[int]) -> tuple[int, int]:
    """(tokens, steps) of greedy decode with the tree on the continuation these ranks were measured
    on (greedy decode's path is that continuation, so the walk is its steps): each step adds its
    accepted tokens plus the target's own. Only the steps that start at least the tree's depth
    before the continuation's end count: later ones could need ranks past it."""
    depth = max(depths(parents))
    tokens = steps = start = 0
    for _, accepted in decode_steps(parents, ranks):
        if start + depth > len(ranks):
            break
        tokens, steps, start = tokens + accepted + 1, steps + 1, start + accepted + 1
    return tokens, steps


def level_counts(parents: list[int], ranks_by_prompt: list[list[int]], width: int) -> list[list[int]]:
    """counts[level - 1][rank] (rank 0: none accepted) of the positions decode's walk with the
    tree meets at each level (the last row: that level or deeper)."""
    counts = [[0] * (width + 1) for _ in range(LEVELS)]
    for ranks in ranks_by_prompt:
        for met, _ in decode_steps(parents, ranks):
            for level, rank in enumerate(met):
                counts[min(level, LEVELS - 1)][rank] += 1
    return counts


def rows_met(parents: list[int], acceptance: dict) -> list[list[float]]:
    """The rows by level the tree meets on the acceptance artifact's ranks (each level's counts
    plus a few positions spread as the whole vector, as in `acceptance_from_counts`). A file
    that leaves out its `width` drew as many children as its vector has entries."""
    width = acceptance.get("width", len(acceptance["acceptance"]))
    counts = level_counts(parents, list(acceptance["ranks"].values()), width)
    return shrunk_rows([row for row in counts if sum(row)], acceptance["acceptance"])


def plan_by_levels(acceptance: dict, positional: bool, plan: Callable, score: Callable) -> tuple:
    """(plan's result, the rows its tree meets). `plan(rows)` returns a result whose first item
    is a tree's parents; `score(parents, rows)` rates a tree under the rows it meets (higher is
    better). It starts from `planning_acceptance`; with `positional`, or without ranks (a
    hand-written or older vector), those rows are all there is."""
    planned = planning_acceptance(acceptance, positional)
    result = plan(planned)
    if positional or not acceptance.get("ranks"):
        return result, planned
    visited = []  # (result, the rows its tree meets)
    for _ in range(ROUNDS):
        met = rows_met(result[0], acceptance)
        visited.append((result, met))
        following = plan(met)
        if following[0] == result[0]:
            return result, met  # settled: the DP's best tree for the rows it meets
        if any(following[0] == seen[0] for seen, _ in visited):
            break  # a cycle
        result = following
    return max(visited, key=lambda pair: score(pair[0][0], pair[1]))
