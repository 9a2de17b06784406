"""Dynamic trees: a tree grown anew at every step, level by level, where the draft is confident.

A node's estimated path acceptance is the product, down its path, of each node's chance of being
the child the target accepts: calibrated from the draft's own probability of it (the
calibration `measure-acceptance` records), times the chance that its earlier siblings were all
rejected. Each level keeps the children with the best estimates, up to the level's width cap,
and the draft reads a level only while that level, with the best run of levels it opens, is
worth its draft forwards (the cost model: target t(n) for the nodes verified, draft t(width) for
each level read, a token worth `token_ms`).

Exactness. Greedy verification accepts the target's argmax whatever the tree, so greedy growth
may use every probability the draft gave. Sampled verification of a node's children stays exact
when the number of children verified is decided before each child is seen (a stopping rule on
the draws so far: the residual the next child is verified against is owed whatever comes), so a
sampled child is ranked by an estimate that does not read its own probability: the expected
acceptance of the next draw from what the draft has left. A child is kept only with its earlier
siblings (scores taken as a running minimum over ranks), and which nodes a level keeps depends on
nodes the walk can never reach together. Tests check both by exact enumeration and sampling.
"""

from dataclasses import dataclass
from functools import cached_property

import torch

from sequoia_cli.cost import interpolate
from sequoia_cli.kv import Cache, causal, fit_vocab, forward
from sequoia_cli.sampling import Sampling, distribution, draw_children


@dataclass(frozen=True)
class Growth:
    """How a run grows its trees: the most nodes per level (levels 1, 2, ...), the children drawn
    per node, the draft's calibration (bin edges and each bin's acceptance, empty bins filled),
    the chance that a reached node has one of its children accepted (`gain`), and the cost model:
    target and draft forward times by token count, and what a token is worth (`token_ms`)."""

    widths: tuple[int, ...]
    children: int
    edges: tuple[float, ...]
    rates: tuple[float, ...]
    gain: float
    target_ms: dict[int, float]
    draft_ms: dict[int, float]
    token_ms: float

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def budget(self) -> int:
        """The most nodes a tree can have, root included."""
        return 1 + sum(self.widths)

    @cached_property
    def _times(self) -> dict[str, list[float]]:
        """Each model's forward time at 0 to twice the budget tokens, read once: every level of
        every step weighs many counts."""
        return {role: [interpolate(ms, count) for count in range(2 * self.budget + 1)]
                for role, ms in (("target", self.target_ms), ("draft", self.draft_ms))}

    def target_at(self, count: int) -> float:
        times = self._times["target"]
        return times[count] if count < len(times) else interpolate(self.target_ms, count)

    def draft_at(self, count: int) -> float:
        times = self._times["draft"]
        return times[count] if count < len(times) else interpolate(self.draft_ms, count)


def filled_rates(calibration: dict) -> tuple[float, ...]:
    """Each bin's acceptance, as a dynamic tree reads a child's chance of acceptance: an empty bin
    takes the nearest bin with data (the lower of two as near: the cautious guess); with no data
    at all, each bin's middle probability (a draft as good as the target)."""
    edges, acceptance = calibration["edges"], calibration["acceptance"]
    measured = [index for index, rate in enumerate(acceptance) if rate is not None]
    if not measured:
        return tuple((low + high) / 2 for low, high in zip(edges, edges[1:]))
    return tuple(acceptance[min(measured, key=lambda m: (abs(m - index), m))] for index in range(len(acceptance)))


def growth_of(dynamic: dict) -> Growth:
    """The Growth a tree artifact's `dynamic` section describes."""
    calibration = dynamic["calibration"]
    return Growth(tuple(dynamic["widths"]), dynamic["children"], tuple(calibration["edges"]),
                  filled_rates(calibration), dynamic["gain"],
                  {int(n): float(ms) for n, ms in dynamic["target_ms"].items()},
                  {int(n): float(ms) for n, ms in dynamic["draft_ms"].items()}, dynamic["token_ms"])


def calibrated(probabilities: torch.Tensor, growth: Growth) -> torch.Tensor:
    """The calibrated acceptance of children the draft gives these probabilities."""
    edges = torch.tensor(growth.edges[1:-1], dtype=probabilities.dtype, device=probabilities.device)
    rates = torch.tensor(growth.rates, dtype=probabilities.dtype, device=probabilities.device)
    return rates[torch.bucketize(probabilities, edges, right=True)]


def earlier_rejected(acceptance: torch.Tensor) -> torch.Tensor:
    """Per child (rows, ranks): the chance that every earlier sibling was rejected."""
    ones = torch.ones_like(acceptance[:, :1])
    return torch.cat([ones, (1 - acceptance).cumprod(dim=-1)[:, :-1]], dim=-1)


@dataclass
class Children:
    """A level's proposed children (rows: its nodes; columns: ranks): their tokens, which are real
    draws, the scores they are kept by, their own estimated path acceptance, and the
    distributions they were drawn from (None in greedy mode)."""

    tokens: torch.Tensor
    real: torch.Tensor
    scores: torch.Tensor
    own: torch.Tensor
    dists: torch.Tensor | None


def propose(logits: torch.Tensor, reach: torch.Tensor, growth: Growth, sampling: Sampling,
            generator: torch.Generator) -> Children:
    """Children for each node of a level (rows of `logits`, the nodes' estimated path acceptance
    `reach`)."""
    if sampling.greedy:
        probabilities, tokens = torch.softmax(logits, dim=-1).topk(growth.children, dim=-1)
        accept = calibrated(probabilities, growth)
        own = reach[:, None] * earlier_rejected(accept) * accept
        return Children(tokens, torch.ones_like(tokens, dtype=torch.bool), own, own, None)
    dists = distribution(logits, sampling.temperature, sampling.top_p)
    tokens, real = draw_children(dists, growth.children, "sequoia", generator)
    scores, own = sampled_scores(dists, tokens, real, reach, growth)
    return Children(tokens, real, scores, own, dists)


def sampled_scores(dists: torch.Tensor, tokens: torch.Tensor, real: torch.Tensor, reach: torch.Tensor,
                   growth: Growth) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, own estimated path acceptance) of children drawn without replacement from `dists`.
    A child's score reads only its earlier siblings: the chance they were all rejected times the
    expected acceptance of the next draw from what the draft has left."""
    probabilities = dists.gather(-1, tokens) * real
    accept = calibrated(probabilities, growth) * real
    before = earlier_rejected(accept)
    whole = (dists * calibrated(dists, growth)).sum(dim=-1, keepdim=True)
    taken = torch.cat([torch.zeros_like(whole), probabilities.cumsum(dim=-1)[:, :-1]], dim=-1)
    taken_accept = torch.cat([torch.zeros_like(whole), (probabilities * accept).cumsum(dim=-1)[:, :-1]], dim=-1)
    upcoming = ((whole - taken_accept) / (1 - taken).clamp_min(1e-12)).clamp(0.0, 1.0)
    return reach[:, None] * before * upcoming, reach[:, None] * before * accept


def choose(scores: torch.Tensor, real: torch.Tensor, cap: int, threshold: float) -> torch.Tensor:
    """Flat indices (row * ranks + rank, ascending) of the children a level keeps: the `cap` best
    by score at or above `threshold` (and above 0), each with its earlier siblings (a child's score
    is the running minimum over its rank and the ranks before, and ties go to the earlier rank)."""
    effective = scores.masked_fill(~real, -torch.inf).cummin(dim=-1).values.flatten()
    order = torch.sort(effective, descending=True, stable=True).indices[:cap]
    picked = effective[order]
    return order[(picked >= threshold) & (picked > 0)].sort().values


def worth_reading(reach: float, frontier: int, read_tokens: int, size: int, level: int, growth: Growth) -> bool:
    """Whether the draft should read level `level` (`frontier` nodes whose estimated path acceptance
    sums to `reach`, in a forward of `read_tokens` tokens, on a tree of `size` nodes): whether
    reading it and, at best, some of the levels it opens pays. Each level read adds up to its cap
    (`children` per node of the level above), reaching `gain` times as far as the level above, each
    token worth `token_ms`, against the draft's forwards and the target's longer verification.
    Looking past the first level keeps a forward time that is not monotone in the tokens (a CPU
    slower at 2 tokens than at 6) or a first level that just fails to pay on its own from stopping
    a tree that pays as a whole."""
    base = growth.target_at(size)
    gained = draft = 0.0
    added, nodes = 0, frontier
    for depth, cap in enumerate(growth.widths[level:]):
        draft += growth.draft_at(read_tokens if depth == 0 else nodes)
        nodes = min(cap, growth.children * nodes)
        added += nodes
        reach *= growth.gain
        gained += reach
        if gained * growth.token_ms >= draft + growth.target_at(size + added) - base:
            return True
    return False


def node_price(size: int, growth: Growth) -> float:
    """The least estimated path acceptance a node must have to be verified on a tree of `size`:
    the target's cheapest time per node over growing the tree by 1 node up to its budget (a node
    opens the room for more, and a forward time that is not monotone, or flat past a point, makes
    several nodes cheaper per node than one), in tokens of `token_ms`."""
    base = growth.target_at(size)
    return min((growth.target_at(size + added) - base) / added
               for added in range(1, max(2, growth.budget - size + 1))) / growth.token_ms


@dataclass
class Grown:
    """One step's grown tree: parents in level order, tokens, the draft distribution each node of
    the levels read drew its children from (rows by node; None in greedy mode), how many levels
    the draft read (level 0 is the tokens it had not read, ending with the root), the tokens the
    calibration predicts the step adds (1 + every node's estimated path acceptance), and each
    node's slot: its entry's offset from the root's in the draft's cache."""

    parents: list[int]
    tokens: torch.Tensor
    dists: torch.Tensor | None
    read: int
    predicted: float
    slots: list[int]


def grow(cache: Cache, pending: torch.Tensor, growth: Growth, sampling: Sampling, vocab: int,
         generator: torch.Generator) -> Grown:
    """One step's tree, grown on the draft's cache. A fixed-shape engine (static caches, CUDA
    graphs) reads every level at its cap, the nodes past the kept ones switched off (each sees
    only itself, and nothing reads it), so that a run's forwards keep one shape per level; the
    eager engine reads the kept nodes alone."""
    device = pending.device
    padded = cache.engine != "eager"
    parents, tokens, dists, slots = [-1], pending[-1:], [], [0]
    ancestors = torch.zeros(growth.budget, growth.budget, dtype=torch.bool, device=device)
    ancestors[0, 0] = True
    reach = torch.ones(1, device=device)
    start, read, predicted, end_slot = 0, 0, 1.0, 1
    root_position = cache.length + len(pending) - 1
    for level, cap in enumerate(growth.widths):
        size = len(parents)
        read_tokens = len(pending) if level == 0 else size - start
        if not worth_reading(float(reach.sum()), size - start, read_tokens, size, level, growth):
            break
        if level == 0:
            logits = forward(cache, pending, cache.length + torch.arange(len(pending), device=device),
                             causal(len(pending), device), last=1, fixed=padded)
        else:  # level l sees the cached levels 1..l-1 through the tree's ancestry only
            width = growth.widths[level - 1] if padded else size - start
            level_tokens, attend = _level_input(tokens[start:], ancestors[start:size, 1:size], slots, start, width)
            logits = forward(cache, level_tokens, torch.full((width,), root_position + level, device=device), attend,
                             fixed=padded)[: size - start]
        read += 1
        children = propose(fit_vocab(logits.float(), vocab), reach, growth, sampling, generator)
        if children.dists is not None:
            dists.append(children.dists)
        kept = choose(children.scores, children.real, cap, node_price(size, growth))
        if not len(kept):
            break
        rows, ranks = kept // growth.children, kept % growth.children
        new = torch.arange(size, size + len(kept), device=device)
        owners = rows + start
        ancestors[new] = ancestors[owners]
        ancestors[new, new] = True
        parents += owners.tolist()
        slots += range(end_slot, end_slot + len(kept))
        end_slot += cap if padded else len(kept)
        tokens = torch.cat([tokens, children.tokens[rows, ranks]])
        reach, start = children.own[rows, ranks], size
        predicted += float(reach.sum())
    return Grown(parents, tokens, (torch.cat(dists) if dists else None), read, predicted, slots)


def _level_input(level: torch.Tensor, ancestors: torch.Tensor, slots: list[int], start: int,
                 width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A level's tokens and what they see of the cached levels below the root, padded to `width`
    rows: `ancestors` (the level's rows over nodes 1..) spread to those nodes' slots, and each
    switched-off row sees its own slot alone."""
    count, device = len(level), level.device
    first = slots[start]  # the level's first slot: the rows' own slots follow it
    attend = torch.zeros(width, first - 1 + width, dtype=torch.bool, device=device)
    attend[:count, torch.tensor(slots[1:start + count], device=device) - 1] = ancestors
    off = torch.arange(count, width, device=device)
    attend[off, first - 1 + off] = True
    return torch.cat([level, level[:1].expand(width - count)]), attend


def budget_parents(growth: Growth) -> list[int]:
    """A tree as large and deep as the growth allows (each level's nodes under the first node of
    the level above): the room a run's caches keep for one step."""
    parents, first = [-1], 0
    for width in growth.widths:
        start = len(parents)
        parents += [first] * width
        first = start
    return parents
