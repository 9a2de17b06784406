"""The KV caches the decode loop keeps, and the forwards over them, in two engines.

- `eager`: transformers' DynamicCache, grown by each forward and cut back after verification.
  It serves any model however placed (accelerate across devices, layers streamed from disk).
- `static`: transformers' StaticCache, each layer's keys and values preallocated on that layer's
  device for the run's slots. A forward writes its tokens in place at the slots after the
  sequence, its mask spans every slot, and verification moves the accepted entries down in place;
  what lies past the sequence is stale and masked. Every forward of a step (a draft level, the
  target's tree, a plain step) has a fixed token count, so each (model, count) keeps its input
  buffers and mask, updated in place; on CUDA it is also captured once as a CUDA graph and
  replayed, so that a small model's forward costs its kernels rather than Python and launches.

Both present one interface: `forward(cache, tokens, positions, attend, last)` reads `tokens` on
top of the cache's `length` entries and leaves them cached; `keep(cache, start, offsets)` keeps
entries [0, start) and those at start + offsets.
"""

import warnings
from dataclasses import dataclass, field

import torch
import transformers
from transformers import DynamicCache, StaticCache

from sequoia_cli.devices import input_device
from sequoia_cli.errors import BadInput, one_line

ENGINES = ("eager", "static", "cuda-graphs")
# Static caches are sized in steps of this many slots, so that prompts of similar lengths share
# one cache and its captured forwards.
SLOT_STEP = 256


@dataclass
class Cache:
    """One model's KV cache: `length` entries are the sequence, the rest (static) is room."""

    model: object
    engine: str
    kv: DynamicCache | StaticCache
    slots: int = 0  # static: entries preallocated
    length: int = 0
    replays: dict = field(default_factory=dict)  # static: (tokens, rows) -> Replay


def engine_of(model, engine: str) -> str:
    """The engine `model` runs with when `engine` is asked: eager for a model accelerate placed
    across devices or streams from disk, whose layers no static cache can hold whole."""
    return "eager" if getattr(model, "hf_device_map", None) else engine


def engines_served(device: torch.device) -> tuple[str, str]:
    """The engines compared on `device`: eager, and the fixed-shape one the device serves."""
    return ("eager", "cuda-graphs" if device.type == "cuda" else "static")


def new_cache(model, engine: str, tokens: int) -> Cache:
    """A cache for a sequence of up to `tokens` entries, in the engine the model can run."""
    engine = engine_of(model, engine)
    if engine == "eager":
        return Cache(model, engine, DynamicCache(config=model.config))
    slots = -(-tokens // SLOT_STEP) * SLOT_STEP
    return Cache(model, engine, StaticCache(config=model.config, max_cache_len=slots), slots)


def fit_cache(cache: Cache | None, model, engine: str, tokens: int) -> Cache:
    """`cache`, entries and all, where it is the model's and has room for `tokens`, else a new
    one: a run's prompts share their static caches and captured forwards, and a conversation's
    next turn the entries of the turns before (the caller keeps what it shares)."""
    engine = engine_of(model, engine)
    if cache is not None and cache.model is model and cache.engine == engine and (
            engine == "eager" or tokens <= cache.slots):
        return cache
    return new_cache(model, engine, tokens)


def causal(count: int, device) -> torch.Tensor:
    return torch.ones(count, count, dtype=torch.bool, device=device).tril()


def fit_vocab(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Draft logits over the target's vocabulary: a draft with padding columns loses them, a
    smaller draft never proposes the target's extra tokens."""
    if logits.shape[-1] >= vocab:
        return logits[..., :vocab]
    pad = torch.full((*logits.shape[:-1], vocab - logits.shape[-1]), -torch.inf, device=logits.device)
    return torch.cat([logits, pad], dim=-1)


def blocked_value(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).min


def forward(cache: Cache, tokens: torch.Tensor, positions: torch.Tensor, attend: torch.Tensor,
            last: int = 0, fixed: bool = True) -> torch.Tensor:
    """Logits (rows, vocab) of one forward of `tokens` on top of the cache, which then holds them;
    rows are the last `last` tokens' (all with 0: the vocabulary projection of a long prompt costs
    as much as a forward). `attend` (tokens, cols) says what each new token sees of the last
    `cols` entries after the forward; everything before those is the prefix, seen by all.

    A static forward that is `fixed` (a shape every step has) runs from its Replay and returns a
    buffer that the next forward of that shape overwrites; a prompt's prefill is not fixed."""
    count = len(tokens)
    rows = count if last in (0, count) else last
    if cache.engine != "eager" and cache.length + count > cache.slots:
        raise RuntimeError(f"static cache of {cache.slots} slots cannot take {cache.length} + {count} tokens")
    if cache.engine == "eager" or not fixed:
        mask = _mask(attend, cache.length + count, cache.model.dtype, cache.slots)
        if cache.engine != "eager":
            _write_at(cache, cache.length)
        out = cache.model(input_ids=tokens[None], position_ids=positions[None], attention_mask=mask,
                          past_key_values=cache.kv, use_cache=True, logits_to_keep=last)
        cache.length += count
        return out.logits[0].to(tokens.device)  # a model spread over devices ends on another one
    replay = cache.replays.get((count, rows))
    if replay is None:
        replay = cache.replays[count, rows] = Replay(cache, count, rows, capture=cache.engine == "cuda-graphs")
    logits = replay(tokens, positions, attend)
    cache.length += count
    return logits


def _mask(attend: torch.Tensor, kv_length: int, dtype: torch.dtype, slots: int = 0) -> torch.Tensor:
    """4D float mask (1, 1, rows, max(kv_length, slots)) (see `forward`): slots past kv_length
    are blocked."""
    rows, cols = attend.shape
    room = torch.zeros(rows, max(slots - kv_length, 0), dtype=torch.bool, device=attend.device)
    seen = torch.cat([torch.ones(rows, kv_length - cols, dtype=torch.bool, device=attend.device), attend, room],
                     dim=1)
    blocked = torch.full(seen.shape, blocked_value(dtype), dtype=dtype, device=seen.device)
    return torch.where(seen, torch.zeros((), dtype=dtype, device=seen.device), blocked)[None, None]


class Replay:
    """A model's forward at one token count over its static cache, from fixed input buffers. On
    CUDA the forward is captured as a graph at its second call (the first allocates the cache's
    tensors) and replayed after; a capture that fails warns once and leaves it uncaptured."""

    def __init__(self, cache: Cache, count: int, rows: int, capture: bool):
        model = cache.model
        device = model.get_input_embeddings().weight.device
        self.cache, self.rows, self.capture = cache, rows, capture
        self.tokens = torch.zeros(1, count, dtype=torch.long, device=device)
        self.positions = torch.zeros(1, count, dtype=torch.long, device=device)
        self.mask = torch.zeros(1, 1, count, cache.slots, dtype=model.dtype, device=device)
        # Where the forward writes: copied into every layer's write position inside the forward, so
        # that a replay is one fill outside the graph rather than one per layer.
        self.start = torch.zeros((), dtype=torch.long, device=device)
        self.graph = None
        self.logits = None

    def run(self) -> torch.Tensor:
        _write_at(self.cache, self.start)
        out = self.cache.model(input_ids=self.tokens, position_ids=self.positions, attention_mask=self.mask,
                               past_key_values=self.cache.kv, use_cache=True, logits_to_keep=self.rows)
        return out.logits[0]

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        cache, count = self.cache, self.tokens.shape[1]
        self.tokens[0].copy_(tokens)
        self.positions[0].copy_(positions)
        end = cache.length + count
        self.mask.fill_(blocked_value(self.mask.dtype))
        self.mask[..., : end - attend.shape[1]] = 0.0
        self.mask[0, 0, :, end - attend.shape[1]: end].masked_fill_(attend, 0.0)
        self.start.fill_(cache.length)
        if self.graph is None and self.capture and self.logits is not None:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self.run()
        return self.logits

    def _capture(self) -> None:
        """Capture after one uncaptured call: the cache's tensors exist by then (transformers
        allocates them at the first write), and warm-up runs on a side stream as CUDA asks."""
        try:
            graph = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.run()
            torch.cuda.current_stream().wait_stream(side)
            with torch.cuda.graph(graph):
                logits = self.run()
        except Exception as error:  # any capture failure leaves the forward uncaptured
            self.capture = False
            warnings.warn(f"CUDA graph capture failed ({one_line(error)}); this forward runs uncaptured",
                          stacklevel=2)
            return
        self.graph, self.logits = graph, logits


def _write_at(cache: Cache, start: int | torch.Tensor) -> None:
    """Point every static layer's write position at `start` (a number, or a 0-dim tensor on the
    device). transformers' StaticLayer writes a forward's entries at its `cumulative_length`, a
    tensor it allocates with the layer at its first write."""
    try:
        for layer in cache.kv.layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.fill_(start)
            else:
                layer.cumulative_length = torch.as_tensor(start).clone()
    except AttributeError as err:
        raise RuntimeError(f"this transformers release ({transformers.__version__}) lays out StaticCache"
                           f" otherwise than sequoia expects ({err}): install the version pyproject.toml"
                           " pins") from None


def keep(cache: Cache, start: int, offsets: list[int]) -> None:
    """Keep entries [0, start) followed by those at start + offsets (the accepted nodes), drop
    the rest. Offsets increase and offsets[j] >= j, so the entries move down, never up.

    The one place that reaches into transformers' cache layers (`layers[i].keys/values`, tensors
    of (batch, heads, tokens, head_dim) in transformers 5): a release that lays them out
    otherwise fails here, by name."""
    end = start + len(offsets)
    moved = offsets != list(range(len(offsets)))
    try:
        index = [start + offset for offset in offsets] if moved else None
        on = {}  # the index on each device that holds layers
        for layer in cache.kv.layers:  # a model spread over devices keeps each layer's cache on its own
            if not getattr(layer, "is_initialized", True):
                continue
            if index is not None:
                at = on.get(layer.keys.device)
                if at is None:
                    at = on[layer.keys.device] = on_device(index, layer.keys.device)
                layer.keys[:, :, start:end] = layer.keys[:, :, at]
                layer.values[:, :, start:end] = layer.values[:, :, at]
            if cache.engine == "eager":
                layer.keys, layer.values = layer.keys[:, :, :end], layer.values[:, :, :end]
    except (AttributeError, TypeError) as err:
        raise RuntimeError(f"this transformers release ({transformers.__version__}) lays out its caches"
                           f" otherwise than sequoia expects ({err}): install the version pyproject.toml"
                           " pins") from None
    cache.length = end


def on_device(values: list[int], device: torch.device) -> torch.Tensor:
    """Integers as a tensor on `device`; to a GPU through pinned memory, so that the copy queues
    behind the GPU's work instead of waiting for it."""
    host = torch.tensor(values, dtype=torch.long)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def check_engine(engine: str, device: torch.device, placed: bool) -> None:
    """An engine the device or the model's placement cannot serve is an error before any loads."""
    if engine not in ("auto", *ENGINES):
        raise BadInput(f"engine '{engine}' is not one of auto, {', '.join(ENGINES)}", "engine")
    if engine == "cuda-graphs" and device.type != "cuda":
        raise BadInput(f"engine cuda-graphs needs a CUDA device, not {device}", "engine", "device")
    if engine in ("static", "cuda-graphs") and placed:
        raise BadInput(f"engine {engine} keeps a model whole on one device: a placed or offloaded target"
                       " runs with --engine eager (or auto)", "engine")


def engine_for(engine: str, device: torch.device, placed: bool) -> str:
    """The engine a run uses: `auto` is cuda-graphs on CUDA (launches, not bytes, bound a small
    model's forward there) and eager on a CPU, where a forward costs its bytes either way and the
    bench measures the static engine no faster end to end (docs/results.md, experiment 8); eager
    too for a target placed across devices or streamed from disk."""
    if engine != "auto":
        return engine
    return "cuda-graphs" if device.type == "cuda" and not placed else "eager"


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
