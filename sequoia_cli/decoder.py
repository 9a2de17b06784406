"""The decode loop: draft a token tree, verify it with one target forward, keep the accepted path
in both KV caches, repeat.

Every method runs through `Decoder.generate`: autoregressive decoding is a tree of size 1 (no
draft), a chain of K tokens is a tree of depth K with one child per node, Sequoia and SpecInfer
differ only in how children are drawn and verified (`sampling.py`), and a dynamic tree is grown
anew at every step (`dynamic.py`).

Both models see a tree as extra query tokens on top of their KV cache (`kv.py`: an eager dynamic
cache or a static one), with a mask in which a node sees the cached prefix and its own ancestors,
and positions = prefix length + node depth. The draft reads one level per forward; the target
reads the whole tree in one forward. Every index a step needs is a tensor built once per tree,
so that on a GPU a step runs without waiting on the host until its result is read (`verify.py`).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sequoia_cli.devices import context_length, input_device, sync
from sequoia_cli.dynamic import Growth, grow
from sequoia_cli.kv import Cache, causal, fit_cache, fit_vocab, forward, keep, on_device
from sequoia_cli.layout import Layout, tree_layout
from sequoia_cli.sampling import Sampling, distribution, draw_children
from sequoia_cli.verify import Accepted, Drafted, expected_step_tokens, verify_device, verify_host


@dataclass(frozen=True)
class DecodeConfig:
    """A decode run: the models, the tree (`parents`; with `growth`, the largest tree a step may
    grow, the caches' room), how children are drawn and verified, the new tokens' budget, the
    tokens that end a generation, and the engine its caches use (`kv.py`; a placed model runs
    eager whatever is asked). `expected` records each step's expected tokens (for measuring a
    tree; it costs time); `walk_on_device` verifies on the device (default: on a GPU)."""

    target: object
    draft: object | None
    parents: list[int]
    sampling: Sampling
    max_new_tokens: int
    eos_ids: frozenset[int] = frozenset()
    engine: str = "eager"
    growth: Growth | None = None
    expected: bool = False
    walk_on_device: bool | None = None


@dataclass
class Caches:
    """The two models' KV caches and the sequence they hold entries of, kept from one generation
    to the next: a next prompt reuses their room, a conversation's next turn their entries."""

    target: Cache | None = None
    draft: Cache | None = None
    tokens: list[int] = field(default_factory=list)


@dataclass
class Result:
    output_ids: list[int]
    accepted: list[int] = field(default_factory=list)  # tokens added per step
    # Tokens each step produced before the cut at EOS or the budget (only a run's last step differs):
    # what a prediction of tokens per step is to be set against.
    step_tokens: list[int] = field(default_factory=list)
    # Per step, with `expected`: the tokens the step adds on average over verification's coin flips,
    # given the tree drafted (`verify.expected_step_tokens`).
    expected: list[float] = field(default_factory=list)
    # Per step of a dynamic tree: the tokens its calibration predicted (`dynamic.grow`).
    predicted: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # the prompt and the output
    seconds: float = 0.0  # the whole call, prefill included
    prefill_seconds: float = 0.0  # both models reading the prompt (all but its last token)
    draft_forwards: int = 0
    undrafted_steps: int = 0  # steps whose tree the draft did not read: plain target steps
    stopped_by: str = ""  # eos | max_new_tokens | context


@dataclass
class Step:
    """One step's tree, drafted: what verification reads, the levels the draft read (it reads
    every level above the deepest, or a grown tree's levels until it stopped), each node's entry
    in the draft's cache where that is not the node's own offset (a grown tree on a fixed-shape
    engine), and the tokens a grown tree's calibration predicts."""

    drafted: Drafted
    read: int
    slots: list[int] | None = None
    predicted: float | None = None


class Decoder:
    """Decodes prompts by one `DecodeConfig`, keeping the caches between them (`caches`, which a
    caller may share between decoders of the same models and engine). The output follows the
    target's own distribution (token for token in greedy mode)."""

    def __init__(self, config: DecodeConfig, caches: Caches | None = None):
        self.config = config
        self.device = input_device(config.target)
        self.vocab = config.target.get_output_embeddings().out_features
        self.layout = tree_layout(config.parents, self.device)
        self.draft = config.draft if self.layout.depth > 0 else None
        self.context = min(context_length(model) for model in (config.target, self.draft) if model is not None)
        on_device = self.device.type == "cuda" if config.walk_on_device is None else config.walk_on_device
        self.verify = verify_device if on_device else verify_host
        self.single = tree_layout([-1], self.device)
        self.caches = caches if caches is not None else Caches()

    def generate(self, prompt_ids: list[int], generator: torch.Generator,
                 on_tokens: Callable[[list[int]], None] | None = None, extend: bool = False) -> Result:
        """Decode after `prompt_ids` until EOS, the budget or a full context; `on_tokens` gets each
        step's new tokens. With `extend`, the caches keep the entries of the tokens the sequence
        they hold shares with this prompt (a conversation's next turn reads only what is new);
        without, the prompt is read whole, as the bench times it."""
        tokens, result = list(prompt_ids), Result(output_ids=[])
        self._fit_caches(len(tokens))
        started = time.perf_counter()
        with torch.inference_mode():
            self._prefill(tokens, extend)
            sync(self.device)
            result.prefill_seconds = time.perf_counter() - started
            while not result.stopped_by:
                step = self._draft(tokens, generator)
                accepted = self._verify(tokens, step, generator, result)
                self._accept(tokens, step, accepted, result, on_tokens)
        sync(self.device)
        result.seconds = time.perf_counter() - started
        result.tokens = self.caches.tokens = tokens
        return result

    def _fit_caches(self, prompt_length: int) -> None:
        """Caches with room for the prompt, its budget and one tree (those held, where they have it)."""
        config, caches = self.config, self.caches
        room = min(prompt_length + config.max_new_tokens, self.context) + self.layout.size
        caches.target = fit_cache(caches.target, config.target, config.engine, room)
        caches.draft = fit_cache(caches.draft, self.draft, config.engine, room) if self.draft is not None else None

    def _prefill(self, tokens: list[int], extend: bool) -> None:
        """The prompt but its last token, read before the first step (which reads that token as its
        root), so that the prefill is timed apart from the steps the cost model predicts."""
        held = self.caches.tokens if extend else []
        for cache in (self.caches.target, self.caches.draft):
            if cache is not None:
                keep(cache, shared_prefix(held, tokens[:-1], cache.length), [])
                rest = len(tokens) - 1 - cache.length
                if rest:
                    forward(cache, on_device(tokens[cache.length:-1], self.device),
                            cache.length + torch.arange(rest, device=self.device), causal(rest, self.device),
                            last=1, fixed=False)

    def _draft(self, tokens: list[int], generator: torch.Generator) -> Step:
        """The step's tree: grown (dynamic), drafted level by level, or the root alone (no draft,
        or too near the end of the context, where plain steps finish rather than overflow it)."""
        config, cache = self.config, self.caches.draft
        if self.draft is None or len(tokens) + self.layout.depth > self.context:
            root = on_device(tokens[-1:], self.device)
            return Step(Drafted(self.single, root, None, torch.ones(1, dtype=torch.bool, device=self.device)), 0)
        pending = on_device(tokens[cache.length:], self.device)  # ends with the root
        if config.growth:
            grown = grow(cache, pending, config.growth, config.sampling, self.vocab, generator)
            layout = tree_layout(grown.parents, self.device)
            alive = torch.ones(layout.size, dtype=torch.bool, device=self.device)
            return Step(Drafted(layout, grown.tokens, grown.dists, alive), grown.read, grown.slots, grown.predicted)
        return Step(draft_tree(cache, pending, self.layout, config.sampling, self.vocab, generator), self.layout.depth)

    def _verify(self, tokens: list[int], step: Step, generator: torch.Generator, result: Result) -> Accepted:
        """The target's one forward over the tree (it holds every token but the root), and what
        verification accepts."""
        drafted, config = step.drafted, self.config
        layout = drafted.layout
        positions = len(tokens) - 1 + layout.depth_of
        if config.growth and layout.size > 1:
            logits = verify_grown(self.caches.target, drafted.tokens, positions, layout.ancestors, self.layout.size)
        else:
            logits = forward(self.caches.target, drafted.tokens, positions, layout.ancestors, last=layout.size)
        if config.expected:
            result.expected.append(expected_step_tokens(logits, drafted, config.sampling))
        return self.verify(logits, drafted, config.sampling, generator)

    def _accept(self, tokens: list[int], step: Step, accepted: Accepted, result: Result,
                on_tokens: Callable[[list[int]], None] | None) -> None:
        """Keep the accepted path in both caches, add the step's tokens up to EOS, the budget or the
        context, and record the step."""
        caches, root = self.caches, len(tokens) - 1
        keep(caches.target, root + 1, [node - 1 for node in accepted.path])
        if step.read:  # the draft read the levels above `read` (a static tree: all but the deepest)
            slot = step.slots or range(step.drafted.layout.size)
            depth_of = step.drafted.layout.node_depths
            keep(caches.draft, root + 1, [slot[node] - 1 for node in accepted.path if depth_of[node] < step.read])
        result.step_tokens.append(len(accepted.tokens))
        result.draft_forwards += step.read
        result.undrafted_steps += not step.read
        if step.predicted is not None:
            result.predicted.append(step.predicted)
        # A step that accepts its deepest node adds depth + 1 tokens: the last may be past the context.
        budget, left = self.config.max_new_tokens - len(result.output_ids), self.context - len(tokens)
        new, result.stopped_by = until_stop(accepted.tokens, self.config.eos_ids, min(budget, left))
        if result.stopped_by == "max_new_tokens" and left < budget:
            result.stopped_by = "context"
        tokens += new
        result.output_ids += new
        result.accepted.append(len(new))
        if on_tokens:
            on_tokens(new)
        if not result.stopped_by and len(tokens) >= self.context:
            result.stopped_by = "context"
        if result.stopped_by:
            # A step cut short at EOS or the budget leaves tokens in the caches that are not kept.
            for cache in (caches.target, caches.draft):
                if cache is not None:
                    keep(cache, min(cache.length, len(tokens) - 1), [])


def draft_tree(cache: Cache, pending: torch.Tensor, layout: Layout, sampling: Sampling, vocab: int,
               generator: torch.Generator) -> Drafted:
    """A static tree drafted level by level on the draft's cache; `pending` are the tokens the
    draft has not read yet, ending with the root."""
    device = pending.device
    tokens = torch.empty(layout.size, dtype=torch.long, device=device)
    tokens[:1] = pending[-1:]
    alive = torch.ones(layout.size, dtype=torch.bool, device=device)
    proposals = []
    root_position = cache.length + len(pending) - 1
    for level in range(layout.depth):
        start, end = layout.level_starts[level], layout.level_starts[level + 1]
        if level == 0:
            logits = forward(cache, pending, cache.length + torch.arange(len(pending), device=device),
                             causal(len(pending), device), last=1)
        else:  # level l sees the cached levels 1..l-1 through the tree's ancestry only
            logits = forward(cache, tokens[start:end], root_position + layout.depth_of[start:end],
                             layout.ancestors[start:end, 1:end])
        logits = fit_vocab(logits.float(), vocab)
        most = layout.widest[level]
        if sampling.greedy:
            drawn, real = logits.topk(most, dim=-1)[1], None
        else:
            dists = distribution(logits, sampling.temperature, sampling.top_p)
            drawn, real = draw_children(dists, most, sampling.method, generator)
            proposals.append(dists)
        below, rows, kid_ranks = slice(end, layout.level_starts[level + 2]), layout.parent_rows[level], \
            layout.child_ranks[level]
        tokens[below] = drawn[rows, kid_ranks]
        if real is not None:
            alive[below] = real[rows, kid_ranks] & alive[start:end][rows]
    return Drafted(layout, tokens, torch.cat(proposals) if proposals else None, alive)


def verify_grown(cache: Cache, tree: torch.Tensor, positions: torch.Tensor, ancestors: torch.Tensor,
                 budget: int) -> torch.Tensor:
    """The target's logits for a grown tree. A fixed-shape engine reads it at the run's budget,
    the nodes past the tree switched off (each sees only itself; verification never reaches
    them), so that every grown step has one shape; the eager engine reads the tree alone."""
    size = len(tree)
    if cache.engine == "eager":
        return forward(cache, tree, positions, ancestors, last=size, fixed=False)
    attend = torch.eye(budget, dtype=torch.bool, device=tree.device)
    attend[:size, :size] = ancestors
    padded = torch.cat([tree, tree[:1].expand(budget - size)])
    return forward(cache, padded, torch.cat([positions, positions[:1].expand(budget - size)]), attend,
                   last=budget)[:size]


def shared_prefix(held: list[int], wanted: list[int], cached: int) -> int:
    """How many leading entries of a cache holding `cached` entries of the sequence `held` serve a
    sequence starting with `wanted`."""
    count = 0
    for a, b in zip(held[:cached], wanted):
        if a != b:
            break
        count += 1
    return count


def until_stop(new: list[int], eos_ids: frozenset[int], room: int) -> tuple[list[int], str]:
    """A step's tokens cut at the first EOS (kept) or where the budget runs out, and why it stopped
    ("" where it did not)."""
    for i, token in enumerate(new[:room]):
        if token in eos_ids:
            return new[: i + 1], "eos"
    if len(new) >= room:
        return new[:room], "max_new_tokens"
    return new, ""
