"""build-tree: the tree of a given size with the most expected tokens, by dynamic program."""

import numpy as np

from sequoia_cli.artifacts import planning_acceptance, table_artifact, tree_artifact
from sequoia_cli.tree import best_tree, depth_bound, tree_table


def build_tree(acceptance: dict, size: int, max_depth: int | None = None,
               positional: bool = False) -> tuple[dict, dict]:
    """The best tree of exactly `size` nodes and depth <= `max_depth` (default: no bound) for the
    acceptance artifact `acceptance` (by level where it has rows by level, unless `positional`),
    and the whole E(n, d) table (a sequoia-tree-table/1 artifact)."""
    max_depth = depth_bound(size, max_depth)
    table = tree_table(planning_acceptance(acceptance, positional), size, max_depth)
    parents = best_tree(table, size, max_depth)
    expected = [[float(x) if np.isfinite(x) else None for x in row] for row in table.expected]
    return (tree_artifact(parents, acceptance, float(table.expected[max_depth, size]), positional),
            table_artifact(table.acceptance, expected))
