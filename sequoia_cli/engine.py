"""The decode loop: grow a token tree with the draft, verify it with one target forward, keep the
accepted path in both KV caches, repeat.

Every method runs through `generate`: autoregressive decoding is a tree of size 1 (no draft), a
chain of K tokens is a tree of depth K with one child per node, Sequoia and SpecInfer differ only
in how children are drawn and verified (`sampling.py`).

Both models see a tree as extra query tokens on top of their KV cache, with a 4D float mask
(0 = attend, dtype min = blocked) in which a node sees the cached prefix and its own ancestors,
and `position_ids` = prefix length + node depth. The draft reads one level per forward; the target
reads the whole tree in one forward.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import transformers
from transformers import DynamicCache

from sequoia_cli.errors import BadInput
from sequoia_cli.sampling import distribution, draw_children, sample, verify_node
from sequoia_cli.tree import check_parents, depths, level_order, level_widths


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

    @property
    def size(self) -> int:
        return len(self.parents)


def tree_layout(parents: list[int], device: torch.device | str = "cpu") -> Layout:
    check_parents(parents)
    parents = level_order(parents)
    size = len(parents)
    node_depths = depths(parents)
    children = [[] for _ in parents]
    ancestors = torch.eye(size, dtype=torch.bool)
    for i in range(1, size):
        children[parents[i]].append(i)
        ancestors[i] |= ancestors[parents[i]]
    widths = level_widths(parents)
    level_starts = [sum(widths[:level]) for level in range(len(widths) + 1)]
    return Layout(parents, len(widths) - 1, node_depths, torch.tensor(node_depths, device=device), children,
                  level_starts, ancestors.to(device))


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
    # given the tree drafted (see `expected_tokens`).
    expected: list[float] = field(default_factory=list)
    seconds: float = 0.0  # the whole call, prefill included
    prefill_seconds: float = 0.0  # both models reading the prompt (all but its last token)
    draft_forwards: int = 0
    stopped_by: str = ""  # eos | max_new_tokens | context
    # The caches at the end: the target's holds every token but the last, the draft's a prefix.
    target_cache: DynamicCache | None = None
    draft_cache: DynamicCache | None = None


def _mask(attend: torch.Tensor, kv_length: int, dtype: torch.dtype) -> torch.Tensor:
    """4D float mask (1, 1, rows, kv_length): `attend` (rows, cols) says what each new token sees
    of the last `cols` cache entries; everything before those is the prefix, seen by all."""
    rows, cols = attend.shape
    seen = torch.cat([torch.ones(rows, kv_length - cols, dtype=torch.bool, device=attend.device), attend], dim=1)
    blocked = torch.full(seen.shape, torch.finfo(dtype).min, dtype=dtype, device=seen.device)
    return torch.where(seen, torch.zeros((), dtype=dtype, device=seen.device), blocked)[None, None]


def forward(model, cache: DynamicCache, tokens: torch.Tensor, positions: torch.Tensor,
             attend: torch.Tensor, last: int = 0) -> torch.Tensor:
    """Logits (new tokens, vocab) of one forward over `tokens` on top of `cache`; with `last`,
    only the last `last` rows (the vocabulary projection of a long prompt costs as much as
    a forward)."""
    mask = _mask(attend, cache.get_seq_length() + len(tokens), model.dtype)
    out = model(input_ids=tokens[None], position_ids=positions[None], attention_mask=mask,
                past_key_values=cache, use_cache=True, logits_to_keep=last)
    return out.logits[0].to(tokens.device)  # a model spread over devices ends on another one


def causal(count: int, device) -> torch.Tensor:
    return torch.ones(count, count, dtype=torch.bool, device=device).tril()


def keep(cache: DynamicCache, start: int, offsets: list[int]) -> None:
    """Keep cache[:start] followed by the entries at start + offsets (the accepted nodes), drop
    the rest. Offsets increase and offsets[j] >= j, so the entries move down, never up.

    The one place that reaches into the cache's internals (`layers[i].keys/values`, tensors of
    (batch, heads, tokens, head_dim) in transformers 5): a release that lays them out otherwise
    fails here, by name."""
    end = start + len(offsets)
    try:
        index = None
        if offsets != list(range(len(offsets))):
            index = torch.tensor(offsets) + start
        for layer in cache.layers:  # a model spread over devices keeps each layer's cache on its own
            if index is not None:
                moved = index.to(layer.keys.device)
                layer.keys[:, :, start:end] = layer.keys[:, :, moved]
                layer.values[:, :, start:end] = layer.values[:, :, moved]
            layer.keys, layer.values = layer.keys[:, :, :end], layer.values[:, :, :end]
    except (AttributeError, TypeError) as err:
        raise RuntimeError(f"this transformers release ({transformers.__version__}) lays out DynamicCache"
                           f" otherwise than sequoia expects ({err}): install the version pyproject.toml"
                           " pins") from None


MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> None:
    """A seed is a number in 0..MAX_SEED."""
    if not 0 <= seed <= MAX_SEED:
        raise BadInput(f"seed is {seed}: it must be in 0..{MAX_SEED}", "seed")


def prompt_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """One generator per prompt: a run is repeatable, and its prompts draw different numbers."""
    # A generator takes 64 bits: a large seed's product wraps around instead of overflowing.
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + index) % 2**64)


def _draft_tree(draft, cache: DynamicCache, pending: list[int], layout: Layout, sampling: Sampling,
                vocab: int, generator: torch.Generator, device) -> tuple[torch.Tensor, list, torch.Tensor]:
    """Grow the tree level by level: tokens (n,), the draft distribution each node's children
    were drawn from ({node: q}; empty in greedy mode), and which nodes are real draws."""
    tokens = torch.zeros(layout.size, dtype=torch.long, device=device)
    tokens[0] = pending[-1]
    alive = torch.ones(layout.size, dtype=torch.bool, device=device)
    proposals = {}
    cached = cache.get_seq_length()
    root_position = cached + len(pending) - 1
    for level in range(layout.depth):
        start, end = layout.level_starts[level], layout.level_starts[level + 1]
        if level == 0:  # the tokens the draft has not read yet, ending with the root
            logits = forward(draft, cache, torch.tensor(pending, device=device),
                             cached + torch.arange(len(pending), device=device), causal(len(pending), device), last=1)
        else:  # level l sees the cached levels 1..l-1 through the tree's ancestry only
            logits = forward(draft, cache, tokens[start:end], root_position + layout.depth_of[start:end],
                              layout.ancestors[start:end, 1:end])
        logits = fit_vocab(logits.float(), vocab)
        # Every level above the deepest has a node with children, so `most` >= 1.
        most = max(len(layout.children[node]) for node in range(start, end))
        if sampling.greedy:
            drawn, real = logits.topk(most, dim=-1)[1], torch.ones(end - start, most, dtype=torch.bool, device=device)
        else:
            dists = distribution(logits, sampling.temperature, sampling.top_p)
            drawn, real = draw_children(dists, most, sampling.method, generator)
        for row, node in enumerate(range(start, end)):
            kids = layout.children[node]
            if kids:
                if not sampling.greedy:  # greedy verification needs only the tokens
                    proposals[node] = dists[row]
                tokens[kids] = drawn[row, :len(kids)]
                alive[kids] = real[row, :len(kids)] & alive[node]
    return tokens, proposals, alive


def fit_vocab(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Draft logits over the target's vocabulary: a draft with padding columns loses them, a
    smaller draft never proposes the target's extra tokens."""
    if logits.shape[-1] >= vocab:
        return logits[..., :vocab]
    pad = torch.full((*logits.shape[:-1], vocab - logits.shape[-1]), -torch.inf, device=logits.device)
    return torch.cat([logits, pad], dim=-1)


def _verify(target_logits: torch.Tensor, tokens: torch.Tensor, proposals: dict, alive: torch.Tensor,
            layout: Layout, sampling: Sampling, generator: torch.Generator) -> tuple[list[int], int]:
    """Walk down from the root; returns the accepted nodes (root excluded) and the token that
    ends the step, drawn from the target (or its residual)."""
    path, node = [], 0
    token_list, alive_list = tokens.tolist(), alive.tolist()
    while True:
        kids = [k for k in layout.children[node] if alive_list[k]]
        if sampling.greedy:
            best = int(target_logits[node].argmax())
            match = next((k for k in kids if token_list[k] == best), None)
            if match is None:
                return path, best
            path.append(match)
            node = match
            continue
        p = distribution(target_logits[node].float(), sampling.temperature, sampling.top_p)
        if not kids:
            return path, sample(p, generator)
        uniforms = torch.rand(len(kids), generator=generator, device=p.device).tolist()
        chosen, rest, _ = verify_node(p, proposals[node], [token_list[k] for k in kids], sampling.method, uniforms)
        if chosen is None:
            return path, sample(rest, generator)
        node = kids[chosen]
        path.append(node)


def expected_tokens(target_logits: torch.Tensor, tokens: torch.Tensor, proposals: dict, alive: torch.Tensor,
                    layout: Layout, sampling: Sampling) -> float:
    """The tokens a step adds on average over verification's random draws, given the drafted tree:
    1 + the sum over nodes of the probability that the walk accepts them. Its mean over steps is the
    mean of `accepted`, with the variance of the coin flips removed (a tree's size is measured in far
    fewer steps). A child is reached when every earlier sibling was rejected, whatever the draws,
    so each node's probability follows from the acceptance probabilities `verify_node` reports."""
    if sampling.greedy:  # nothing is random: the walk itself
        return len(_verify(target_logits, tokens, proposals, alive, layout, sampling, None)[0]) + 1.0
    token_list, alive_list = tokens.tolist(), alive.tolist()
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


def check_tree_attention(model, name: str) -> None:
    """Refuse a model that ignores a custom 4D mask: its tree logits would silently be wrong.
    Probe: a root with two children; the second child must not see the first."""
    device = input_device(model)
    tokens = torch.tensor([1, 2, 3], device=device)
    siblings = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool, device=device)
    with torch.inference_mode():
        positions = torch.tensor([0, 1, 1], device=device)
        tree = forward(model, DynamicCache(config=model.config), tokens, positions, siblings)
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
             on_tokens: Callable[[list[int]], None] | None = None, expected: bool = False) -> Result:
    """Decode after `prompt_ids` until EOS, `max_new_tokens` or the context is full. The output
    follows the target's own distribution (token for token in greedy mode). `expected` also
    records each step's `expected_tokens` (for measuring a tree, it costs time)."""
    device = input_device(target)
    vocab = target.get_output_embeddings().out_features
    context = context_length(target) if draft is None else min(context_length(target), context_length(draft))
    single = tree_layout([-1], device)
    tokens = list(prompt_ids)
    result = Result(output_ids=[])
    target_cache, draft_cache = DynamicCache(config=target.config), None
    if draft is not None and layout.depth > 0:
        draft_cache = DynamicCache(config=draft.config)
    started = time.perf_counter()
    with torch.inference_mode():
        # The prompt but its last token, read before the first step (which reads that token as its
        # root), so that the prefill is timed apart from the steps the cost model predicts.
        prefix = torch.tensor(tokens[:-1], device=device)
        if len(prefix):
            for model, cache in [(target, target_cache), (draft, draft_cache)]:
                if cache is not None:
                    forward(model, cache, prefix, torch.arange(len(prefix), device=device), causal(len(prefix), device),
                            last=1)
        target_cached = draft_cached = len(prefix)
        sync(device)
        result.prefill_seconds = time.perf_counter() - started
        while True:
            # Near the end of the context, finish with plain steps rather than overflow it.
            step_layout = layout if len(tokens) + layout.depth <= context else single
            pending = tokens[draft_cached:]
            if step_layout.depth > 0:
                tree, proposals, alive = _draft_tree(draft, draft_cache, pending, step_layout, sampling,
                                                     vocab, generator, device)
                result.draft_forwards += step_layout.depth
            else:
                tree = torch.tensor(tokens[-1:], device=device)
                proposals, alive = {}, torch.ones(1, dtype=torch.bool, device=device)
            chunk = torch.tensor(tokens[target_cached:], device=device)
            n_chunk, root = len(chunk), len(tokens) - 1
            positions = torch.cat([root - n_chunk + 1 + torch.arange(n_chunk, device=device),
                                   root + step_layout.depth_of[1:]])
            attend = torch.zeros(n_chunk + step_layout.size - 1, n_chunk + step_layout.size - 1,
                                 dtype=torch.bool, device=device)
            attend[:n_chunk, :n_chunk] = causal(n_chunk, device)
            attend[n_chunk:, :n_chunk] = True
            attend[n_chunk:, n_chunk:] = step_layout.ancestors[1:, 1:]
            logits = forward(target, target_cache, torch.cat([chunk, tree[1:]]), positions, attend,
                             last=step_layout.size)
            if expected:
                result.expected.append(expected_tokens(logits, tree, proposals, alive, step_layout, sampling))
            path, bonus = _verify(logits, tree, proposals, alive, step_layout, sampling, generator)

            keep(target_cache, root + 1, [node - 1 for node in path])
            target_cached = root + 1 + len(path)
            if step_layout.depth > 0:  # the draft never read the deepest level
                fed = [node - 1 for node in path if step_layout.node_depths[node] < step_layout.depth]
                keep(draft_cache, root + 1, fed)
                draft_cached = root + 1 + len(fed)
            new = tree[path].tolist() + [bonus]
            result.step_tokens.append(len(new))

            new, result.stopped_by = _until_stop(new, eos_ids, max_new_tokens - len(result.output_ids))
            tokens += new
            result.output_ids += new
            result.accepted.append(len(new))
            if on_tokens:
                on_tokens(new)
            if not result.stopped_by and len(tokens) >= context:
                result.stopped_by = "context"
            if result.stopped_by:
                # A step cut short at EOS or the budget leaves tokens in the caches that are not kept.
                keep(target_cache, min(target_cached, len(tokens) - 1), [])
                if draft_cache is not None and draft_cache.get_seq_length():
                    keep(draft_cache, min(draft_cached, len(tokens) - 1), [])
                break
    sync(device)
    result.seconds = time.perf_counter() - started
    result.target_cache, result.draft_cache = target_cache, draft_cache
    return result


def _until_stop(new: list[int], eos_ids: set[int], room: int) -> tuple[list[int], str]:
    """Cut a step's tokens at the first EOS (kept) or when the budget runs out."""
    for i, token in enumerate(new[:room]):
        if token in eos_ids:
            return new[: i + 1], "eos"
    if len(new) >= room:
        return new[:room], "max_new_tokens"
    return new, ""
