"""build-tree: the tree of a given size with the most expected tokens, by dynamic program."""

import numpy as np

from sequoia_cli.acceptance import plan_by_levels
from sequoia_cli.artifacts import table_artifact, tree_artifact
from sequoia_cli.tree import best_tree, depth_bound, expected_tokens, tree_table


def build_tree(acceptance: dict, size: int, max_depth: int | None = None,
               positional: bool = False) -> tuple[dict, dict]:
    """The best tree of exactly `size` nodes and depth <= `max_depth` (default: no bound) for the
    acceptance artifact `acceptance` (by level where it has rows by level or ranks, unless
    `positional`: `acceptance.plan_by_levels`), and the whole E(n, d) table it was built from (a
    sequoia-tree-table/1 artifact)."""
    max_depth = depth_bound(size, max_depth)

    def plan(rows):
        table = tree_table(rows, size, max_depth)
        return best_tree(table, size, max_depth), table

    (parents, table), rows = plan_by_levels(acceptance, positional, plan, expected_tokens)
    expected = [[float(x) if np.isfinite(x) else None for x in row] for row in table.expected]
    return (tree_artifact(parents, acceptance, expected_tokens(parents, rows), positional, rows=rows),
            table_artifact(table.acceptance, expected))
