"""The plan of dynamic trees that `optimize --method dynamic` writes, with its predicted speed.

A plan caps each level of the trees grown per step (`dynamic.grow`). Its speed is predicted by
playing grow's own rules (`worth_reading`, `node_price`, `choose`) on simulated steps. Each
simulated child has a draft probability bin drawn from the calibration: a node's first child from
the bins of the most probable children the measurement tried (as many as it had positions: one
first child each), its later children from the rest, none more probable than the first child or
than what the first leaves. Growth decides by the bin's calibrated acceptance, as in decode; the
tokens a step realizes follow that acceptance corrected by rank, so that a node's k-th child is
accepted as often as the acceptance vector says (the calibration pools ranks: on some pairs a
second child is accepted more often than its probability suggests). Times are the profile's.

A plan whose growth is predicted no faster than the static tree of the same file says so
(`fallback`), and decode then runs that static tree: picking dynamic never costs speed.
"""

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch

from sequoia_cli.cost import interpolate
from sequoia_cli.dynamic import Growth, choose, earlier_rejected, growth_of, node_price, worth_reading
from sequoia_cli.tree import level_widths

STEPS = 400  # simulated steps per prediction: its tokens per step within about 2%
NODES = 4000  # simulated nodes that set the correction by rank
SEED = 0  # one stream: the same files give the same plan


@dataclass(frozen=True)
class Confidence:
    """How sure the draft is, as the calibration saw it: weights per bin of a node's first child's
    draft probability and of its later children's, each bin's lower edge, and per rank the factor
    that turns a bin's calibrated acceptance into the acceptance realized at that rank."""

    first: np.ndarray
    later: np.ndarray
    lows: np.ndarray
    factors: np.ndarray


@dataclass(frozen=True)
class Prediction:
    """The predicted figures of a plan's grown trees: tokens per step, ms per token, draft forwards
    per step, the share of steps that draft nothing, and the speedup over autoregressive decoding."""

    tokens_per_step: float
    ms_per_token: float
    draft_forwards_per_step: float
    undrafted_share: float
    speedup: float


def confidence_of(calibration: dict, positions: int, vector: list[float], rates: tuple[float, ...],
                  children: int) -> Confidence:
    """The calibration's children split into first and later ones: the `positions` most probable
    (by bin, from the top) as first children, the rest as later ones (without data, every bin
    alike); the factors by rank make simulated nodes accept their k-th child as often as `vector`."""
    tried = np.asarray(calibration["tried"], dtype=float)
    if not tried.sum():
        tried = np.ones_like(tried)
        positions = len(tried)
    first, left = np.zeros_like(tried), float(positions)
    for index in reversed(range(len(tried))):
        first[index] = min(tried[index], left)
        left -= first[index]
    split = Confidence(first / first.sum(), tried - first, np.asarray(calibration["edges"][:-1], dtype=float),
                       np.ones(children))
    return Confidence(split.first, split.later, split.lows, rank_factors(split, vector, rates, children))


def rank_factors(confidence: Confidence, vector: list[float], rates: tuple[float, ...], children: int) -> np.ndarray:
    """Per rank, the factor on calibrated acceptance under which simulated nodes accept their k-th
    child (the earlier ones rejected) as often as `vector` says, set rank by rank."""
    accept = np.asarray(rates)[draw_bins(confidence, NODES, children, np.random.default_rng(SEED))]
    factors, rejected = np.ones(children), np.ones(NODES)
    for rank in range(min(children, len(vector))):
        model = float((rejected * accept[:, rank]).mean())
        factors[rank] = vector[rank] / model if model > 0 else 1.0
        rejected = rejected * (1 - np.minimum(1.0, factors[rank] * accept[:, rank]))
    return factors


def draw_bins(confidence: Confidence, rows: int, children: int, rng: np.random.Generator) -> np.ndarray:
    """Bins (rows, children) of simulated nodes' children: the first child's from the first-child
    weights, each later one's from the later weights of bins at most as probable as the first child
    and as what it leaves (the lowest bin where none is), in falling order."""
    bins = len(confidence.lows)
    first = rng.choice(bins, size=rows, p=confidence.first)
    drawn = [first]
    if children > 1:
        bound = np.minimum(confidence.lows[first], 1.0 - confidence.lows[first])
        weights = confidence.later[None, :] * (confidence.lows[None, :] <= bound[:, None] + 1e-12)
        totals = weights.sum(axis=1, keepdims=True)
        weights = np.where(totals > 0, weights / np.where(totals > 0, totals, 1.0), np.eye(bins)[0])
        cumulative = weights.cumsum(axis=1)
        later = [(cumulative < rng.random((rows, 1))).sum(axis=1).clip(max=bins - 1) for _ in range(children - 1)]
        drawn += list(-np.sort(-np.stack(later, axis=1), axis=1).T)
    return np.stack(drawn, axis=1)


def simulated_step(growth: Growth, confidence: Confidence, pending: int,
                   rng: np.random.Generator) -> tuple[float, float, int, float]:
    """One step grown by grow's rules on simulated children: (the tokens it realizes, its ms, the
    levels the draft read, the chance it accepts a node the draft did not read)."""
    rates = np.asarray(growth.rates)
    reach = realized = torch.ones(1, dtype=torch.float64)
    size, frontier, read, tokens, unread = 1, 1, 0, 1.0, 0.0
    ms = 0.0
    for level, cap in enumerate(growth.widths):
        read_tokens = pending if level == 0 else frontier
        if not worth_reading(float(reach.sum()), frontier, read_tokens, size, level, growth):
            break
        ms += growth.draft_at(read_tokens)
        read += 1
        accept = torch.from_numpy(rates[draw_bins(confidence, frontier, growth.children, rng)])
        truth = (accept * torch.from_numpy(confidence.factors)).clamp(max=1.0)
        own = reach[:, None] * earlier_rejected(accept) * accept
        kept = choose(own, torch.ones_like(own, dtype=torch.bool), cap, node_price(size, growth))
        unread = 0.0
        if not len(kept):
            break
        reach = own.flatten()[kept]
        realized = (realized[:, None] * earlier_rejected(truth) * truth).flatten()[kept]
        size, frontier = size + len(kept), len(kept)
        unread = float(realized.sum())
        tokens += unread
    return tokens, ms + growth.target_at(size), read, unread


def predict(growth: Growth, confidence: Confidence, steps: int = STEPS, seed: int = SEED) -> Prediction:
    """The plan's figures over `steps` simulated steps. A step the draft did not read leaves its
    root for the next step's first forward to read; a step that accepts a node the draft did not
    read leaves that node."""
    rng = np.random.default_rng(seed)
    tokens = ms = 0.0
    reads = undrafted = 0
    pending = 1
    for _ in range(steps):
        step_tokens, step_ms, read, unread = simulated_step(growth, confidence, pending, rng)
        tokens, ms, reads = tokens + step_tokens, ms + step_ms, reads + read
        undrafted += not read
        pending = pending + 1 if not read else 1 + (rng.random() < unread)
    ms_per_token = ms / tokens
    return Prediction(tokens / steps, ms_per_token, reads / steps, undrafted / steps,
                      interpolate(growth.target_ms, 1) / ms_per_token)


def growth_section(parents: list[int], acceptance: dict, target_ms: dict[int, float], draft_ms: dict[int, float],
                   token_ms: float) -> dict:
    """A tree file's `dynamic` section from a tree `parents`: its level widths cap the dynamic
    tree's levels and its widest node the children drawn per node (the budget verification pays
    for), a token is worth `token_ms` (the static pick's ms per token), and a reached node's chance
    of an accepted child is the vector's first `children` entries together."""
    widths = level_widths(parents)[1:] or [1]
    children = max(1, max(Counter(parents[1:]).values(), default=1))
    return {"widths": widths, "children": children, "gain": min(1.0, sum(acceptance["acceptance"][:children])),
            "token_ms": token_ms, "target_ms": {str(n): ms for n, ms in target_ms.items()},
            "draft_ms": {str(n): ms for n, ms in draft_ms.items()}, "calibration": acceptance["calibration"]}


def plan_growth(caps: list[list[int]], acceptance: dict, target_ms: dict[int, float], draft_ms: dict[int, float],
                static_ms_per_token: float) -> dict:
    """The `dynamic` section of the candidate caps (trees' parents) with the best predicted speed,
    with its `prediction`, and `fallback` where that is no faster than the static tree's
    `static_ms_per_token`: decode then runs the static tree."""
    best, best_prediction = None, None
    for parents in caps:
        section = growth_section(parents, acceptance, target_ms, draft_ms, static_ms_per_token)
        growth = growth_of(section)
        confidence = confidence_of(acceptance["calibration"], acceptance.get("samples") or 1,
                                   acceptance["acceptance"], growth.rates, growth.children)
        prediction = predict(growth, confidence)
        if best is None or prediction.ms_per_token < best_prediction.ms_per_token:
            best, best_prediction = section, prediction
    return {**best, "prediction": asdict(best_prediction),
            "fallback": best_prediction.ms_per_token >= static_ms_per_token}
