"""The decode loop: grow a token tree with the draft, verify it with one target forward, keep the
accepted path in both KV caches, repeat.

Every method runs through `generate`: autoregressive decoding is a tree of size 1 (no draft), a
chain of K tokens is a tree of depth K with one child per node, Sequoia and SpecInfer differ only
in how children are drawn and verified (`sampling.py`).

Both models see a tree as extra query tokens on top of their KV cache (`kv.py`: an eager dynamic
cache or a static one), with a mask in which a node sees the cached prefix and its own ancestors,
and positions = prefix length + node depth. The draft reads one level per forward; the target
reads the whole tree in one forward. Every index a step needs is a tensor built once per tree,
so that on a GPU a step runs without waiting on the host until its result is read (`walk.py`).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sequoia_cli.dynamic import Growth, grow
from sequoia_cli.errors import BadInput
from sequoia_cli.kv import Cache, causal, fit_cache, fit_vocab, forward, keep, new_cache, on_device
from sequoia_cli.sampling import distribution, draw_children
from sequoia_cli.tree import check_parents, depths, level_order, level_widths, ranks
from sequoia_cli.walk import expected_tokens, walk_device, walk_host


@dataclass
class Layout:
    """What the loop needs of a tree, computed once per tree. Nodes are in level order, so level l
    is nodes level_starts[l]..level_starts[l+1]-1, and tree node i >= 1 sits at offset i - 1
    after the prefix in either cache."""

    parents: list[int]
    depth: int
    node_depths: list[int]
    depth_of: torch.Tensor  # node_depths as a tensor on the device
    children: list[list[int]]
    level_starts: list[int]
    ancestors: torch.Tensor  # (n, n) bool: i sees j (j is i or an ancestor of i)
    parent_index: torch.Tensor  # (n,) each node's parent, the root its own
    kids: torch.Tensor  # (n, most children) each node's children in rank order, padded with 0
    kid_real: torch.Tensor  # (n, most children) which entries of `kids` are children
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
    kids = torch.tensor([k + [0] * (most - len(k)) for k in children]).reshape(size, most)
    kid_real = torch.tensor([[True] * len(k) + [False] * (most - len(k)) for k in children]).reshape(size, most)
    widest = [max(len(children[n]) for n in range(level_starts[lv], level_starts[lv + 1]))
              for lv in range(len(widths) - 1)]
    below = [range(level_starts[lv], level_starts[lv + 1]) for lv in range(1, len(widths))]
    parent_rows = [torch.tensor([parents[n] - level_starts[lv] for n in nodes], device=device)
                   for lv, nodes in enumerate(below)]
    child_ranks = [torch.tensor([node_ranks[n] - 1 for n in nodes], device=device) for nodes in below]
    return Layout(parents, len(widths) - 1, node_depths, torch.tensor(node_depths, device=device), children,
                  level_starts, ancestors.to(device), torch.tensor([max(p, 0) for p in parents], device=device),
                  kids.to(device), kid_real.to(device), widest, parent_rows, child_ranks)


def chain_parents(length: int) -> list[int]:
    """A chain of `length` speculated tokens: size length + 1, depth length."""
    return list(range(-1, length))


@dataclass
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    method: str = "sequoia"  # sequoia | specinfer | topk

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Result:
    output_ids: list[int]
    accepted: list[int] = field(default_factory=list)  # tokens added per step
    # Tokens each step produced before the cut at EOS or the budget (only a run's last step differs):
    # what a prediction of tokens per step is to be set against.
    step_tokens: list[int] = field(default_factory=list)
    # Per step, when asked: the tokens the step adds on average over verification's coin flips,
    # given the tree drafted (see `walk.expected_tokens`).
    expected: list[float] = field(default_factory=list)
    # Per step of a dynamic tree: the tokens its calibration predicted (`dynamic.grow`).
    predicted: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # the prompt and the output
    seconds: float = 0.0  # the whole call, prefill included
    prefill_seconds: float = 0.0  # both models reading the prompt (all but its last token)
    draft_forwards: int = 0
    undrafted_steps: int = 0  # steps whose tree the draft did not read: plain target steps
    stopped_by: str = ""  # eos | max_new_tokens | context
    # The caches at the end (a later call may reuse them): the target's holds every token but the
    # last, the draft's a prefix.
    target_cache: Cache | None = None
    draft_cache: Cache | None = None


MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> None:
    """A seed is a number in 0..MAX_SEED."""
    if not 0 <= seed <= MAX_SEED:
        raise BadInput(f"seed is {seed}: it must be in 0..{MAX_SEED}", "seed")


def prompt_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """One generator per prompt: a run is repeatable, and its prompts draw different numbers."""
    # A generator takes 64 bits: a large seed's product wraps around instead of overflowing.
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + index) % 2**64)


def _draft_tree(cache: Cache, pending: torch.Tensor, layout: Layout, sampling: Sampling, vocab: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Grow the tree level by level: tokens (n,), the draft distribution each node's children
    were drawn from (row i for node i, through the last level with children; None in greedy
    mode), and which nodes are real draws. `pending` are the tokens the draft has not read yet,
    ending with the root."""
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
    return tokens, (torch.cat(proposals) if proposals else None), alive


def check_tree_attention(model, name: str) -> None:
    """Refuse a model that ignores a custom 4D mask: its tree logits would silently be wrong.
    Probe: a root with two children; the second child must not see the first."""
    device = input_device(model)
    tokens = torch.tensor([1, 2, 3], device=device)
    siblings = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool, device=device)
    with torch.inference_mode():
        positions = torch.tensor([0, 1, 1], device=device)
        tree = forward(new_cache(model, "eager", 3), tokens, positions, siblings)
        path = model(input_ids=tokens[[0, 2]][None]).logits[0, -1]
    if (tree[2] - path).abs().max() > 0.02 * path.abs().max() + 1e-3:
        raise BadInput(f"model '{name}' does not honour a 4D attention mask (try another attention implementation"
                       " or model family): its tree logits would be wrong")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work on every GPU (a model may be spread over several), so that a clock
    read afterwards measures it."""
    if device.type == "cuda":
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)


def input_device(model) -> torch.device:
    """Where a model takes its inputs and where the engine keeps its own tensors: the embedding's
    execution device when accelerate placed the model (its weights may sit elsewhere, on another
    device or on disk), else the model's device."""
    hook = getattr(model.get_input_embeddings(), "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return torch.device(device) if device is not None else model.device


def context_length(model) -> int:
    return config_context(model.config)


def config_context(config) -> int:
    """The tokens of context a model's configuration allows (2048 where it does not say)."""
    return int(getattr(config, "max_position_embeddings", None) or 2048)


def generate(target, draft, prompt_ids: list[int], layout: Layout, sampling: Sampling, max_new_tokens: int,
             eos_ids: set[int], generator: torch.Generator,
             on_tokens: Callable[[list[int]], None] | None = None, expected: bool = False,
             engine: str = "eager", reuse: Result | None = None, walk_on_device: bool | None = None,
             extend: bool = False, growth: Growth | None = None) -> Result:
    """Decode after `prompt_ids` until EOS, `max_new_tokens` or the context is full. The output
    follows the target's own distribution (token for token in greedy mode). `expected` also
    records each step's `expected_tokens` (for measuring a tree, it costs time). `engine` is the
    caches' (`kv.py`; a placed model runs eager whatever is asked); `reuse` is an earlier call's
    result whose caches this call may take over, and with `extend` the entries of the tokens its
    sequence and this prompt share (a conversation's next turn reads only what is new; without,
    every prompt is read whole, as the bench times it). The walk runs on the device on a GPU
    (`walk_on_device` overrides). With `growth`, every step grows its own tree (`dynamic.py`)
    and `layout` is the largest tree it may grow, its caches' room."""
    device = input_device(target)
    vocab = target.get_output_embeddings().out_features
    context = context_length(target) if draft is None else min(context_length(target), context_length(draft))
    walk = walk_device if (device.type == "cuda" if walk_on_device is None else walk_on_device) else walk_host
    single = tree_layout([-1], device)
    tokens = list(prompt_ids)
    result = Result(output_ids=[])
    room = min(len(tokens) + max_new_tokens, context) + layout.size
    target_cache = fit_cache(reuse and reuse.target_cache, target, engine, room)
    draft_cache = None
    if draft is not None and (layout.depth > 0 or growth):
        draft_cache = fit_cache(reuse and reuse.draft_cache, draft, engine, room)
    started = time.perf_counter()
    with torch.inference_mode():
        # The prompt but its last token, read before the first step (which reads that token as its
        # root), so that the prefill is timed apart from the steps the cost model predicts.
        for cache in (target_cache, draft_cache):
            if cache is not None:
                keep(cache, shared_prefix(reuse.tokens if reuse and extend else [], tokens[:-1], cache.length), [])
                rest = len(tokens) - 1 - cache.length
                if rest:
                    forward(cache, on_device(tokens[cache.length:-1], device),
                            cache.length + torch.arange(rest, device=device), causal(rest, device), last=1,
                            fixed=False)
        sync(device)
        result.prefill_seconds = time.perf_counter() - started
        while True:
            # Near the end of the context, finish with plain steps rather than overflow it.
            fits = len(tokens) + layout.depth <= context
            step_layout = layout if fits and not growth else single
            root = len(tokens) - 1
            slots = None  # the draft's cache entries of a grown tree's nodes, where they are not the nodes'
            if growth and fits:
                pending = on_device(tokens[draft_cache.length:], device)
                grown = grow(draft_cache, pending, growth, sampling, vocab, generator)
                tree, proposals, read, slots = grown.tokens, grown.dists, grown.read, grown.slots
                result.predicted.append(grown.predicted)
                step_layout = tree_layout(grown.parents, device)
                alive = torch.ones(step_layout.size, dtype=torch.bool, device=device)
            elif step_layout.depth > 0:
                pending = on_device(tokens[draft_cache.length:], device)
                tree, proposals, alive = _draft_tree(draft_cache, pending, step_layout, sampling, vocab, generator)
                read = step_layout.depth
            else:
                tree, proposals, read = on_device(tokens[-1:], device), None, 0
                alive = torch.ones(1, dtype=torch.bool, device=device)
            result.draft_forwards += read
            result.undrafted_steps += not read
            # The target holds every token but the root: the step's forward is the tree alone.
            positions = root + step_layout.depth_of
            if growth and step_layout.size > 1:
                logits = _verify_grown(target_cache, tree, positions, step_layout.ancestors, layout.size)
            else:
                logits = forward(target_cache, tree, positions, step_layout.ancestors, last=step_layout.size)
            if expected:
                result.expected.append(expected_tokens(logits, tree, proposals, alive, step_layout, sampling))
            path, new = walk(logits, tree, proposals, alive, step_layout, sampling, generator)

            keep(target_cache, root + 1, [node - 1 for node in path])
            if read:  # the draft read the levels above `read` (a static tree: all but the deepest)
                slot = slots or range(step_layout.size)
                keep(draft_cache, root + 1, [slot[node] - 1 for node in path if step_layout.node_depths[node] < read])
            result.step_tokens.append(len(new))

            # A step that accepts its deepest node adds depth + 1 tokens: the last may be past the context.
            budget, left = max_new_tokens - len(result.output_ids), context - len(tokens)
            new, result.stopped_by = _until_stop(new, eos_ids, min(budget, left))
            if result.stopped_by == "max_new_tokens" and left < budget:
                result.stopped_by = "context"
            tokens += new
            result.output_ids += new
            result.accepted.append(len(new))
            if on_tokens:
                on_tokens(new)
            if not result.stopped_by and len(tokens) >= context:
                result.stopped_by = "context"
            if result.stopped_by:
                # A step cut short at EOS or the budget leaves tokens in the caches that are not kept.
                keep(target_cache, min(target_cache.length, len(tokens) - 1), [])
                if draft_cache is not None:
                    keep(draft_cache, min(draft_cache.length, len(tokens) - 1), [])
                break
    sync(device)
    result.seconds = time.perf_counter() - started
    result.target_cache, result.draft_cache, result.tokens = target_cache, draft_cache, tokens
    return result


def _verify_grown(cache: Cache, tree: torch.Tensor, positions: torch.Tensor, ancestors: torch.Tensor,
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


def _until_stop(new: list[int], eos_ids: set[int], room: int) -> tuple[list[int], str]:
    """Cut a step's tokens at the first EOS (kept) or when the budget runs out."""
    for i, token in enumerate(new[:room]):
        if token in eos_ids:
            return new[: i + 1], "eos"
    if len(new) >= room:
        return new[:room], "max_new_tokens"
    return new, ""
