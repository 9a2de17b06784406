"""Token trees: the Sequoia dynamic program, tree shape helpers and expected tokens.

A tree is its `parents` list: node 0 is the root (`parents[0] == -1`), every other node's parent
has a smaller index, and the children of a node in increasing index order are its 1st, 2nd, ...
child (rank 1, 2, ...). Under the positional acceptance assumption, the child of rank k is the
accepted one with probability `acceptance[k-1]`, so a node is reached with the product of the
acceptance of the ranks on its root path, and the expected tokens per step is the sum of those
products over all nodes (the root counts 1: the target always adds a token).

Level-aware (beyond the paper): wherever `acceptance` is taken, it may also be a list of rows, row
l (0-based) holding the acceptance of the children of nodes at level l and the last row that of
every deeper level. One vector is the positional case: one row for every level.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sequoia_cli.errors import BadInput


def check_parents(parents: list[int]) -> None:
    """Raise ValueError unless `parents` is a tree in topological order."""
    if not parents:
        raise ValueError("parents is empty: a tree has at least the root")
    if parents[0] != -1:
        raise ValueError(f"parents[0] is {parents[0]}, the root's must be -1")
    for i, parent in enumerate(parents[1:], start=1):
        if not isinstance(parent, int) or isinstance(parent, bool):
            raise ValueError(f"parents[{i}] is {parent!r}, not an integer")
        if not 0 <= parent < i:
            raise ValueError(f"parents[{i}] is {parent}: not topological (needs 0 <= parent < {i})")


def depths(parents: list[int]) -> list[int]:
    out = [0] * len(parents)
    for i in range(1, len(parents)):
        out[i] = out[parents[i]] + 1
    return out


def ranks(parents: list[int]) -> list[int]:
    """Rank of each node among its siblings (1 = first child); the root has rank 0."""
    seen_children = [0] * len(parents)
    out = [0] * len(parents)
    for i in range(1, len(parents)):
        seen_children[parents[i]] += 1
        out[i] = seen_children[parents[i]]
    return out


def level_widths(parents: list[int]) -> list[int]:
    """Number of nodes at each level, root level first."""
    node_depths = depths(parents)
    return np.bincount(node_depths).tolist()


def acceptance_rows(acceptance) -> list[list[float]]:
    """The rows by level of an acceptance vector ([it]: positional) or of a list of rows."""
    if len(acceptance) and isinstance(acceptance[0], (list, tuple, np.ndarray)):
        return [[float(a) for a in row] for row in acceptance]
    return [[float(a) for a in acceptance]]


def path_probabilities(parents: list[int], acceptance) -> list[float]:
    """Probability that each node is reached: the product of the acceptance of the ranks on its
    root path, each from the row of its parent's level."""
    rows = acceptance_rows(acceptance)
    node_ranks, node_depths = ranks(parents), depths(parents)
    out = [1.0] * len(parents)
    for i in range(1, len(parents)):
        rank, row = node_ranks[i], rows[min(node_depths[parents[i]], len(rows) - 1)]
        out[i] = out[parents[i]] * (row[rank - 1] if rank <= len(row) else 0.0)
    return out


def expected_tokens(parents: list[int], acceptance) -> float:
    return float(sum(path_probabilities(parents, acceptance)))


def max_nodes(width: int, depth: int) -> int:
    """Largest tree with at most `width` children per node and depth at most `depth`."""
    return depth + 1 if width == 1 else (width ** (depth + 1) - 1) // (width - 1)


@dataclass
class TreeTable:
    """The DP's result: `expected[d, n]` is the largest expected tokens of a tree of exactly n
    nodes and depth at most d (-inf where no such tree exists); `choice` lets `best_tree`
    rebuild the argmax trees. With rows by level, `by_level[l]` is the same for a subtree whose
    root sits at level l (`expected` is level 0's)."""

    acceptance: list  # a vector, or rows by level
    by_level: np.ndarray  # (levels, max_depth + 1, max_size + 1), column 0 unused
    choice: np.ndarray  # (levels, max_depth + 1, width + 1, max_size): subtree size of the rank-k child

    @property
    def expected(self) -> np.ndarray:
        return self.by_level[0]

    @property
    def width(self) -> int:
        return self.choice.shape[2] - 1

    @property
    def max_size(self) -> int:
        return self.by_level.shape[2] - 1

    @property
    def max_depth(self) -> int:
        return self.by_level.shape[1] - 1


def _max_plus_convolution(child_values: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """out[m] = max over s in 1..m of child_values[s] + rest[m - s] (out[0] = rest[0] = 0 case
    handled by the caller); also returns the argmax s. Both inputs have length M + 1."""
    size = len(rest)
    padded = np.concatenate([np.full(size - 1, -np.inf, dtype=rest.dtype), rest])
    # shifted[m, s] = rest[m - s], -inf where s > m; a strided view, no copy.
    shifted = sliding_window_view(padded, size)[:, ::-1]
    totals = shifted + child_values[None, :]
    best = totals.argmax(axis=1)
    return totals[np.arange(size), best], best


# The DP keeps a choice table of (depth + 1) x (width + 1) x size int32 entries and runs depth x
# width max-plus convolutions of size x size entries; the bounds keep a DP within memory and seconds.
MAX_TREE_SIZE = 8192
MAX_CHOICE_BYTES = 1 << 30
MAX_WORK = 5 * 10**10


def check_table_bounds(width: int, max_size: int, max_depth: int, levels: int = 1) -> None:
    """Refuse a DP that would not fit in memory or would run for many minutes, before allocating."""
    if max_size > MAX_TREE_SIZE:
        raise BadInput(f"a tree of {max_size} nodes is past what the DP handles ({MAX_TREE_SIZE} nodes)")
    choice_bytes = levels * (max_depth + 1) * (width + 1) * max_size * 4
    if choice_bytes > MAX_CHOICE_BYTES or levels * max_depth * width * max_size**2 > MAX_WORK:
        raise BadInput(f"size {max_size} with depth <= {max_depth} and {width} child ranks is too large a DP"
                       f" ({choice_bytes / 2**30:.1f} GiB table): bound the depth (max_depth)", "max_depth")


def tree_table(acceptance, max_size: int, max_depth: int) -> TreeTable:
    """Sequoia's dynamic program, exact for any acceptance vector (monotone or not) and for rows
    by level.

    A tree of n nodes and depth <= d is a root plus children of ranks 1..b whose subtrees have
    depth <= d - 1 and sizes summing to n - 1; the rank-k child adds acceptance[k-1] times its
    subtree's value. `rest[k][m]` is the best value of children of ranks k, k+1, ... holding m
    nodes in all, built from rank W down to rank 1 by max-plus convolution. With rows by level,
    a subtree rooted at level l takes row l and children valued at level l + 1; every level from
    the last row's on is alike, so the tables are built from the last row's level up to the root.
    """
    rows = acceptance_rows(acceptance)
    levels, width = len(rows), max(len(row) for row in rows)
    check_table_bounds(width, max_size, max_depth, levels)
    values = np.zeros((levels, width))
    for level, row in enumerate(rows):
        values[level, :len(row)] = row
    by_level = np.full((levels, max_depth + 1, max_size + 1), -np.inf)
    by_level[:, :, 1] = 1.0
    choice = np.zeros((levels, max_depth + 1, width + 1, max_size), dtype=np.int32)
    nodes_below = max_size - 1  # children hold at most n - 1 nodes
    for level in range(levels - 1, -1, -1):
        below = min(level + 1, levels - 1)
        for d in range(1, max_depth + 1):
            subtree = by_level[below, d - 1, : nodes_below + 1].copy()
            subtree[0] = -np.inf  # a child holds at least itself
            possible = np.isfinite(subtree)
            rest = np.full(nodes_below + 1, -np.inf)
            rest[0] = 0.0
            for k in range(width, 0, -1):
                child_values = np.full_like(subtree, -np.inf)
                child_values[possible] = values[level, k - 1] * subtree[possible]  # 0 * -inf would be nan
                best, chosen = _max_plus_convolution(child_values, rest)
                best[0], chosen[0] = 0.0, 0
                choice[level, d, k] = chosen
                rest = best
            by_level[level, d, 1:] = 1.0 + rest
    return TreeTable(acceptance=acceptance, by_level=by_level, choice=choice)


def best_tree(table: TreeTable, size: int, depth: int) -> list[int]:
    """The DP's argmax tree of `size` nodes and depth <= `depth`, as parents in level order
    (breadth first, siblings in rank order), so each level is a contiguous run of nodes."""
    if not np.isfinite(table.expected[depth, size]):
        raise BadInput(
            f"no tree of size {size} has depth <= {depth} with {table.width} child ranks"
            f" (at most {max_nodes(table.width, depth)} nodes fit)"
        )
    parents, last = [-1], len(table.choice) - 1
    # Each queued entry is (node index, its subtree size, its depth bound, its level): expand level by level.
    queue = [(0, size, depth, 0)]
    for node, subtree_size, bound, level in queue:
        remaining, rank = subtree_size - 1, 1
        while remaining > 0:
            child_size = int(table.choice[min(level, last), bound, rank, remaining])
            parents.append(node)
            queue.append((len(parents) - 1, child_size, bound - 1, level + 1))
            remaining -= child_size
            rank += 1
    return parents


def level_summary(table: TreeTable, size: int, depth: int, memo: dict, level: int = 0) -> tuple:
    """(nodes, reach) per level, relative to the subtree's root, of the subtree that `best_tree`
    builds at `level` with `size` nodes and depth <= `depth`: its level widths and the
    probability of reaching each of its levels, without building it. `memo` is shared between
    calls on one table (levels from the last row's on are alike)."""
    rows, last = acceptance_rows(table.acceptance), len(table.choice) - 1
    key = (min(level, last), depth, size)
    if key not in memo:
        nodes, reach = np.zeros(depth + 1), np.zeros(depth + 1)
        nodes[0] = reach[0] = 1.0
        row = rows[min(level, len(rows) - 1)]
        remaining, rank = size - 1, 1
        while remaining > 0:
            child = int(table.choice[min(level, last), depth, rank, remaining])
            child_nodes, child_reach = level_summary(table, child, depth - 1, memo, level + 1)
            nodes[1:] += child_nodes
            reach[1:] += (row[rank - 1] if rank <= len(row) else 0.0) * child_reach
            remaining -= child
            rank += 1
        memo[key] = (nodes, reach)
    return memo[key]


def dp_tree(acceptance, size: int, max_depth: int | None = None) -> tuple[list[int], float]:
    """The DP's best tree of `size` nodes and depth <= `max_depth` (default: no bound), with its
    expected tokens."""
    max_depth = depth_bound(size, max_depth)
    table = tree_table(acceptance, size, max_depth)
    return best_tree(table, size, max_depth), float(table.expected[max_depth, size])


def depth_bound(size: int, max_depth: int | None) -> int:
    """The depth bound for a tree of `size` nodes: `max_depth`, or no bound, capped at size - 1
    (no tree of `size` nodes is deeper, so a larger bound only adds rows to the DP's table)."""
    if size < 1:
        raise BadInput(f"size is {size}: a tree has at least 1 node (the root)", "size")
    if max_depth is not None and max_depth < 0:
        raise BadInput(f"max_depth is {max_depth}: depth is at least 0", "max_depth")
    return size - 1 if max_depth is None else min(max_depth, size - 1)


def level_order(parents: list[int]) -> list[int]:
    """Relabel a tree in level order, keeping each node's rank; returns the new parents."""
    children = [[] for _ in parents]
    for i in range(1, len(parents)):
        children[parents[i]].append(i)
    order = [0]
    for node in order:
        order.extend(children[node])
    new_index = {old: new for new, old in enumerate(order)}
    return [-1] + [new_index[parents[old]] for old in order[1:]]


def chain_parents(length: int) -> list[int]:
    """A chain of `length` speculated tokens: size length + 1, depth length."""
    return list(range(-1, length))
