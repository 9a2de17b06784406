"""Trees in other engines' words: TensorRT-LLM's choice lists and the official Sequoia growmap.

Both say what sequoia's `parents` says, in another layout.

An *eagle choice* (TensorRT-LLM's `eagle_choices` and `medusa_choices`) is the path from the root
to one node as 0-based child ranks, the root implicit: `[0, 1]` is the 2nd child of the root's 1st
child. A tree is the list of its non-root nodes' paths.

A *growmap* (what the official Sequoia code's tree_search.py saves with torch.save; UMbreLLa keeps
the same keys as JSON lists) is a dict of:

- `roots`: the nodes of each level, level 0 first, down to the deepest (the nodes the draft reads
  at each growing step);
- `branches`: the number of children of each of those nodes, in the same layout;
- `Successors`: the children of every node, in rank order;
- `mask`: the size x size ancestor mask, `mask[i][j] = 1` where j is i or an ancestor of i;
- `depth`: every node's level;
- `size`: the number of nodes, root included.

Both number nodes level by level, each node's children in rank order, as `tree.level_order` does:
a tree goes out in that order and comes back in it.
"""

import numpy as np

from sequoia_cli.errors import BadInput
from sequoia_cli.schema_rules import shown
from sequoia_cli.tree import MAX_TREE_SIZE, depths, level_order, ranks

GROWMAP_KEYS = ("roots", "branches", "Successors", "mask", "depth", "size")


def children(parents: list[int]) -> list[list[int]]:
    """The children of every node, in rank order."""
    out = [[] for _ in parents]
    for node in range(1, len(parents)):
        out[parents[node]].append(node)
    return out


def eagle_choices(parents: list[int]) -> list[list[int]]:
    """Every non-root node's path of 0-based child ranks from the root, in level order."""
    parents = level_order(parents)
    paths = [[]]
    for node, rank in enumerate(ranks(parents)[1:], start=1):
        paths.append(paths[parents[node]] + [rank - 1])
    return paths[1:]


def parents_from_choices(choices, name: str) -> list[int]:
    """The tree whose non-root nodes are the paths `choices` (in any order), in level order. A
    path given twice, or one whose parent or elder sibling is not given, is refused: the ranks
    would not mean what they say."""
    if not isinstance(choices, list):
        raise BadInput(f"{name}: eagle choices are a list of paths, not {shown(choices)}")
    if len(choices) >= MAX_TREE_SIZE:
        raise BadInput(f"{name}: {len(choices)} paths make a tree past sequoia's {MAX_TREE_SIZE} nodes")
    paths = [_path(choice, index, name) for index, choice in enumerate(choices)]
    given = set()
    for path in paths:
        if path in given:
            raise BadInput(f"{name}: the path {list(path)} is given twice")
        given.add(path)
    for path in paths:
        if len(path) > 1 and path[:-1] not in given:
            raise BadInput(f"{name}: the path {list(path)} has no parent: {list(path[:-1])} is not given")
        if path[-1] > 0 and path[:-1] + (path[-1] - 1,) not in given:
            raise BadInput(f"{name}: the path {list(path)} skips a rank: {list(path[:-1]) + [path[-1] - 1]}"
                           " is not given")
    # Sorting by length, then path, numbers the nodes level by level and siblings by rank.
    ordered = sorted(paths, key=lambda path: (len(path), path))
    index = {(): 0} | {path: node for node, path in enumerate(ordered, start=1)}
    return [-1] + [index[path[:-1]] for path in ordered]


def _path(choice, index: int, name: str) -> tuple[int, ...]:
    if not (isinstance(choice, list) and choice and all(_is_int(rank) and rank >= 0 for rank in choice)):
        raise BadInput(f"{name}: path {index} is {shown(choice)}, not a non-empty list of child ranks 0, 1, ...")
    return tuple(choice)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def growmap(parents: list[int]) -> dict:
    """The growmap of the tree, numbered in level order; `mask` and `depth` are int64 arrays
    (torch.save writes them as tensors, JSON as lists), the rest plain lists and an int."""
    return _layout(level_order(parents))


def _layout(parents: list[int]) -> dict:
    """The growmap of the tree as numbered, without renumbering it."""
    node_depths = depths(parents)
    levels = [[] for _ in range(max(node_depths) + 1)]
    for node, level in enumerate(node_depths):
        levels[level].append(node)
    successors = children(parents)
    mask = np.zeros((len(parents), len(parents)), dtype=np.int64)
    for node, parent in enumerate(parents):
        if parent >= 0:
            mask[node] = mask[parent]  # parents come first: its row already holds its ancestors
        mask[node, node] = 1
    return {"roots": levels, "branches": [[len(successors[node]) for node in level] for level in levels],
            "Successors": successors, "mask": mask, "depth": np.array(node_depths, dtype=np.int64),
            "size": len(parents)}


def as_lists(growmap: dict) -> dict:
    """The growmap as JSON holds it (UMbreLLa's layout): `mask` and `depth` as nested lists."""
    return {**growmap, "mask": growmap["mask"].tolist(), "depth": growmap["depth"].tolist()}


def parents_from_growmap(growmap, name: str) -> list[int]:
    """The tree a growmap describes, in level order. The tree is read from `Successors`; every
    other key must say the same of it, and `mask` and `depth` may be arrays or nested lists."""
    if not isinstance(growmap, dict):
        raise BadInput(f"{name}: not a growmap: {_kind(growmap)}, not a dict of {', '.join(GROWMAP_KEYS)}")
    missing = [key for key in GROWMAP_KEYS if key not in growmap]
    if missing:
        raise BadInput(f"{name}: not a growmap: no {', '.join(repr(key) for key in missing)}")
    size = growmap["size"]
    if not (_is_int(size) and 1 <= size <= MAX_TREE_SIZE):
        raise BadInput(f"{name}: growmap 'size' is {_kind(size)}, not a node count in 1..{MAX_TREE_SIZE}")
    successors = growmap["Successors"]
    if not _is_int_rows(successors):
        raise BadInput(f"{name}: growmap 'Successors' is {_kind(successors)}, not a list of node lists")
    if len(successors) != size:
        raise BadInput(f"{name}: growmap 'size' is {size} but 'Successors' lists {len(successors)} nodes")
    parents = [-1] + [None] * (size - 1)
    for node, node_children in enumerate(successors):
        for child in node_children:
            if not node < child < size or parents[child] is not None:
                raise BadInput(f"{name}: growmap 'Successors[{node}]' holds {child}: not a later node of no other"
                               " parent")
            parents[child] = node
    if None in parents:
        raise BadInput(f"{name}: growmap node {parents.index(None)} is in no 'Successors' list")
    layout = _layout(parents)
    for key in ("Successors", "roots", "branches", "depth", "mask"):
        if not _agrees(growmap[key], layout[key]):
            raise BadInput(f"{name}: growmap '{key}' disagrees with the tree that 'Successors' gives")
    return level_order(parents)


def _is_int_rows(value) -> bool:
    return isinstance(value, list) and all(isinstance(row, list) and all(map(_is_int, row)) for row in value)


def _agrees(given, expected) -> bool:
    """Whether a growmap's value is `expected`: lists of int lists alike, arrays of integers equal."""
    if isinstance(expected, list):
        return _is_int_rows(given) and given == expected
    try:
        array = np.asarray(given)
    except ValueError:  # ragged nested lists
        return False
    return array.dtype.kind in "iu" and np.array_equal(array, expected)


def _kind(value) -> str:
    return shown(value) if isinstance(value, (type(None), bool, int, str, list, dict)) else f"a {type(value).__name__}"
