"""Verifying one step's tree: which drafted nodes the target accepts, and the token that ends the
step, drawn from the target (or its residual where the walk stops).

Two walks down the tree with one outcome distribution:
- `verify_host` goes down the accepted path node by node, verifying a node's children in order
  (`sampling.verify_node`). It reads numbers on the host at every node: free on a CPU, where it
  touches only the path's rows of the target's logits.
- `verify_device` verifies every node's children at once (`verify_rows`, a node's outcome does not
  depend on which nodes the walk reaches) and finds the path with tensor operations, so that a GPU
  runs the step without waiting on the host; the step's result crosses to the host in one transfer.
"""

from dataclasses import dataclass

import torch

from sequoia_cli.layout import Layout
from sequoia_cli.sampling import Sampling, distribution, residual, sample, verify_node, without


@dataclass
class Drafted:
    """A step's tree as verification reads it: its layout, each node's token, the draft
    distribution each node's children were drawn from (row i for node i, through the last level
    with children; None in greedy mode or where nothing was drafted), and which nodes are real
    draws (a row without replacement can run out of tokens)."""

    layout: Layout
    tokens: torch.Tensor
    proposals: torch.Tensor | None
    alive: torch.Tensor


@dataclass
class Accepted:
    """What a step keeps: the accepted nodes (root excluded), and its new tokens: theirs, then the
    one drawn from the target."""

    path: list[int]
    tokens: list[int]


def verify_host(target_logits: torch.Tensor, drafted: Drafted, sampling: Sampling,
                generator: torch.Generator | None) -> Accepted:
    """The step's outcome, walking down the accepted path node by node."""
    path, node, layout, proposals = [], 0, drafted.layout, drafted.proposals
    token_list, alive_list = drafted.tokens.tolist(), drafted.alive.tolist()
    while True:
        kids = [k for k in layout.children[node] if alive_list[k]]
        if sampling.greedy:
            best = int(target_logits[node].argmax())
            match = next((k for k in kids if token_list[k] == best), None)
            if match is None:
                return Accepted(path, [token_list[k] for k in path] + [best])
            path.append(match)
            node = match
            continue
        p = distribution(target_logits[node].float(), sampling.temperature, sampling.top_p)
        if not kids:
            return Accepted(path, [token_list[k] for k in path] + [sample(p, generator)])
        uniforms = torch.rand(len(kids), generator=generator, device=p.device).tolist()
        chosen, rest, _ = verify_node(p, proposals[node], [token_list[k] for k in kids], sampling.method, uniforms)
        if chosen is None:
            return Accepted(path, [token_list[k] for k in path] + [sample(rest, generator)])
        node = kids[chosen]
        path.append(node)


def verify_device(target_logits: torch.Tensor, drafted: Drafted, sampling: Sampling,
                  generator: torch.Generator) -> Accepted:
    """What `verify_host` returns, with one transfer to the host."""
    layout, tokens, proposals, alive = drafted.layout, drafted.tokens, drafted.proposals, drafted.alive
    size = layout.size
    if sampling.greedy:
        best = target_logits.argmax(dim=-1)
        # Greedy siblings hold distinct tokens: at most one child of a node matches.
        on_path = (tokens == best[layout.parent_index]) & alive
    else:
        p = distribution(target_logits.float(), sampling.temperature, sampling.top_p)
        if proposals is None:  # nothing drafted (a plain step): the token comes from p
            on_path, rest = torch.zeros(size, dtype=torch.bool, device=p.device), p
        else:
            rows = proposals.shape[0]  # the nodes that can have children
            kids, real = layout.child_table[:rows], layout.child_real[:rows]
            real = real & alive[kids]
            uniforms = torch.rand(kids.shape, generator=generator, device=p.device)
            rank, rest = verify_rows(p[:rows], proposals, tokens[kids], real, sampling.method, uniforms)[:2]
            chosen = torch.where(rank >= 0, kids.gather(1, rank.clamp_min(0)[:, None])[:, 0], -1)
            chosen = torch.cat([chosen, torch.full((size - rows,), -1, device=chosen.device)])
            on_path = chosen[layout.parent_index] == torch.arange(size, device=chosen.device)
            rest = torch.cat([rest, p[rows:]])
    on_path[0] = True
    # A node is reached when it and every ancestor were accepted; those nodes form one root path.
    reached = ~(layout.ancestors & ~on_path[None, :]).any(dim=-1)
    deepest = torch.where(reached, layout.depth_of, -1).argmax()
    bonus = best[deepest] if sampling.greedy else draw(rest[deepest], generator)
    result = torch.cat([reached.long(), tokens, bonus.reshape(1)]).tolist()
    path = [node for node in range(1, size) if result[node]]
    return Accepted(path, [result[size + node] for node in path] + [result[-1]])


def verify_rows(p: torch.Tensor, q: torch.Tensor, children: torch.Tensor, real: torch.Tensor, method: str,
                uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sampling.verify_node` for many nodes at once: row i verifies the tokens children[i] (those
    `real`, in order) against p[i], drawn from q[i]. Returns each row's accepted rank (-1: none),
    the distribution its last token is then drawn from, and each real child's acceptance
    probability where it was tried (0 elsewhere)."""
    rows, width = children.shape
    target, proposal = p.clone(), q.clone()
    rank = torch.full((rows,), -1, dtype=torch.long, device=p.device)
    tried = torch.zeros(rows, width, dtype=p.dtype, device=p.device)
    for j in range(width):
        token = children[:, j: j + 1]
        live = real[:, j] & (rank < 0)
        target_mass, proposal_mass = target.gather(1, token)[:, 0], proposal.gather(1, token)[:, 0]
        if method == "topk":
            accept = target_mass.clamp(max=1.0)
        else:
            accept = torch.where(proposal_mass > 0, target_mass / proposal_mass.clamp_min(1e-30), 0.0).clamp(max=1.0)
        tried[:, j] = torch.where(live, accept, 0.0)
        accepted = live & (uniforms[:, j] < accept)
        rank = torch.where(accepted, j, rank)
        rejected = (live & ~accepted)[:, None]
        after = without(target, token) if method == "topk" else residual(target, proposal)
        target = torch.where(rejected, after, target)
        if method == "sequoia":
            proposal = torch.where(rejected, without(proposal, token), proposal)
    return rank, target, tried


def draw(dist: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token from `dist` (a 0-dim tensor, left on the device): the first whose cumulative mass
    reaches a uniform in (0, total]."""
    cumulative = dist.cumsum(dim=-1)
    point = (1.0 - torch.rand((), generator=generator, device=dist.device, dtype=dist.dtype)) * cumulative[-1]
    return (cumulative < point).sum().clamp(max=len(dist) - 1)


def expected_step_tokens(target_logits: torch.Tensor, drafted: Drafted, sampling: Sampling) -> float:
    """The tokens a step adds on average over verification's random draws, given the drafted tree:
    1 + the sum over nodes of the probability that the walk accepts them. Its mean over steps is the
    mean of `accepted`, with the variance of the coin flips removed (a tree's size is measured in far
    fewer steps). A child is reached when every earlier sibling was rejected, whatever the draws,
    so each node's probability follows from the acceptance probabilities `verify_node` reports."""
    if sampling.greedy:  # nothing is random: the walk itself
        return len(verify_host(target_logits, drafted, sampling, None).path) + 1.0
    layout, proposals = drafted.layout, drafted.proposals
    token_list, alive_list = drafted.tokens.tolist(), drafted.alive.tolist()
    reached = [1.0] + [0.0] * (layout.size - 1)
    for node in range(layout.size):  # level order: a parent before its children
        kids = [k for k in layout.children[node] if alive_list[k]]
        if not kids or reached[node] == 0.0:
            continue
        p = distribution(target_logits[node].float(), sampling.temperature, sampling.top_p)
        # Uniforms above 1 reject every child, so every child's acceptance probability is reported.
        tried = verify_node(p, proposals[node], [token_list[k] for k in kids], sampling.method, [2.0] * len(kids))[2]
        rejected_before = reached[node]
        for kid, accept in zip(kids, tried):
            reached[kid] = rejected_before * accept
            rejected_before *= 1.0 - accept
    return sum(reached)
