"""build-tree: the tree of a given size with the most expected tokens, by dynamic program."""

import numpy as np

from sequoia_cli.artifacts import TREE, MAJOR_VERSION
from sequoia_cli.errors import BadInput
from sequoia_cli.tree import best_tree, depths, tree_table


def tree_artifact(parents: list[int], acceptance: list[float], expected: float, **extra) -> dict:
    return {
        "format": f"{TREE}/{MAJOR_VERSION}",
        "parents": parents,
        "size": len(parents),
        "depth": max(depths(parents)),
        "expected_tokens": expected,
        "acceptance": acceptance,
        **extra,
    }


def provenance(acceptance_artifact: dict) -> dict:
    """What the acceptance vector was measured under, carried into the tree for `decode`."""
    keys = ("mode", "temperature", "top_p", "draft", "target", "dataset")
    return {key: acceptance_artifact[key] for key in keys if key in acceptance_artifact}


def build_tree(acceptance_artifact: dict, size: int, max_depth: int | None = None) -> tuple[dict, dict]:
    """The best tree of exactly `size` nodes and depth <= `max_depth` (default: no bound),
    and the whole E(n, d) table as a JSON-ready dict."""
    if size < 1:
        raise BadInput(f"--size is {size}: a tree has at least 1 node (the root)")
    max_depth = size - 1 if max_depth is None else max_depth
    if max_depth < 0:
        raise BadInput(f"--max-depth is {max_depth}: depth is at least 0")
    acceptance = acceptance_artifact["acceptance"]
    table = tree_table(acceptance, size, max_depth)
    parents = best_tree(table, size, max_depth)
    tree = tree_artifact(parents, acceptance, float(table.expected[max_depth, size]),
                         source=provenance(acceptance_artifact))
    return tree, table_artifact(table)


def table_artifact(table) -> dict:
    expected = np.where(np.isfinite(table.expected), table.expected, np.nan)
    return {
        "format": "sequoia-tree-table/1",
        "acceptance": table.acceptance,
        "max_size": table.max_size,
        "max_depth": table.max_depth,
        # expected[d][n]: best expected tokens with n nodes and depth <= d; null: no such tree.
        "expected": [[None if np.isnan(x) else float(x) for x in row] for row in expected],
    }
