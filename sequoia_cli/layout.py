"""What the decode loop and verification need of a tree, computed once per tree, as lists for the
host and tensors for the device."""

from dataclasses import dataclass

import torch

from sequoia_cli.tree import check_parents, depths, level_order, level_widths, ranks


@dataclass
class Layout:
    """A tree in level order: level l is nodes level_starts[l]..level_starts[l+1]-1, and node
    i >= 1 sits at offset i - 1 after the prefix in either cache."""

    parents: list[int]
    depth: int
    node_depths: list[int]
    depth_of: torch.Tensor  # node_depths as a tensor on the device
    children: list[list[int]]  # each node's children in rank order
    level_starts: list[int]
    ancestors: torch.Tensor  # (n, n) bool: i sees j (j is i or an ancestor of i)
    parent_index: torch.Tensor  # (n,) each node's parent, the root its own
    child_table: torch.Tensor  # (n, most children) `children` as a table, padded with 0
    child_real: torch.Tensor  # (n, most children) which entries of `child_table` are children
    widest: list[int]  # per level above the deepest: the most children of a node there
    # Per level l >= 1: each node's parent's row within level l - 1, and its rank - 1.
    parent_rows: list[torch.Tensor]
    child_ranks: list[torch.Tensor]

    @property
    def size(self) -> int:
        return len(self.parents)


def tree_layout(parents: list[int], device: torch.device | str = "cpu") -> Layout:
    check_parents(parents)
    parents = level_order(parents)
    size = len(parents)
    node_depths, node_ranks = depths(parents), ranks(parents)
    children = [[] for _ in parents]
    ancestors = torch.eye(size, dtype=torch.bool)
    for i in range(1, size):
        children[parents[i]].append(i)
        ancestors[i] |= ancestors[parents[i]]
    widths = level_widths(parents)
    level_starts = [sum(widths[:level]) for level in range(len(widths) + 1)]
    most = max(len(kids) for kids in children)
    table = torch.tensor([k + [0] * (most - len(k)) for k in children]).reshape(size, most)
    real = torch.tensor([[True] * len(k) + [False] * (most - len(k)) for k in children]).reshape(size, most)
    widest = [max(len(children[n]) for n in range(level_starts[lv], level_starts[lv + 1]))
              for lv in range(len(widths) - 1)]
    below = [range(level_starts[lv], level_starts[lv + 1]) for lv in range(1, len(widths))]
    parent_rows = [torch.tensor([parents[n] - level_starts[lv] for n in nodes], device=device)
                   for lv, nodes in enumerate(below)]
    child_ranks = [torch.tensor([node_ranks[n] - 1 for n in nodes], device=device) for nodes in below]
    return Layout(parents, len(widths) - 1, node_depths, torch.tensor(node_depths, device=device), children,
                  level_starts, ancestors.to(device), torch.tensor([max(p, 0) for p in parents], device=device),
                  table.to(device), real.to(device), widest, parent_rows, child_ranks)
