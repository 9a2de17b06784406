"""profile-hw: how long one forward of n new tokens takes on this machine, on a KV cache of
`context_length` tokens, for the token counts the optimizer weighs.

What the optimizer needs is the curves' shape (each count against its model's t(1), the draft's
t(1) against the target's), and a machine's speed drifts by tens of percent within minutes. So
every (model, count) is timed once per round (the fastest of a short burst), in an order rotated
each round and then walked back in reverse (a drift that is linear over the round then falls on
every item alike), and the shape is read within each round: each count's time over its model's
t(1) of the same round, the draft's t(1) over the target's. Each ratio keeps its median over the
rounds, and the target's t(1) its median, which sets the scale.

The shape is read within a round because a machine's slow spells change the shape, not only the
speed: small counts and large ones, target and draft, slow down by different amounts. A count's
fastest round would mix two shapes whenever a spell starts or ends within a round; the median of
same-round ratios gives the shape of the state most rounds found the machine in, which two
profiles taken in that state agree on (docs/results.md has the figures). A profile whose rounds
read the target's t(1) more than STEADY apart is marked unsteady: the machine changed state while
it ran. The spread is the interquartile range over rounds, and each curve is made monotone in the
count where that stays within the spread.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch

from sequoia_cli.artifacts import profile_artifact
from sequoia_cli.devices import context_length as model_context
from sequoia_cli.devices import input_device, sync
from sequoia_cli.errors import BadInput
from sequoia_cli.kv import causal, engine_of, forward, keep, new_cache
from sequoia_cli.loading import Loaded
from sequoia_cli.seeds import check_seed

# Each timing is the fastest of this many forwards back to back: whatever else the machine does
# only ever slows a forward down.
BURST = 3
# Rounds whose target t(1) differ by more than this caught the machine in more than one state.
STEADY = 0.15


@dataclass(frozen=True)
class Timing:
    """What a profile times: each count of `token_counts(max_tokens)`, on a cache of
    `context_length` random tokens, in `repeats` interleaved rounds after `warmup` untimed
    forwards per (model, count), its random tokens drawn from `seed`."""

    max_tokens: int
    context_length: int
    repeats: int
    warmup: int = 1
    seed: int = 0


# What `profile-hw` times by default, and with --quick: fewer rounds and counts (up to 32 tokens,
# the sizes a CPU's optimizer picks among) for a profile in a fraction of the time.
DEFAULT = Timing(max_tokens=128, context_length=256, repeats=5, warmup=2)
QUICK = Timing(max_tokens=32, context_length=256, repeats=2, warmup=1)


def token_counts(max_tokens: int) -> list[int]:
    """1..8, then powers of two up to max_tokens."""
    if max_tokens < 1:
        raise BadInput(f"max_tokens is {max_tokens}: profile at least 1 token", "max_tokens")
    counts = list(range(1, min(8, max_tokens) + 1))
    power = 16
    while power <= max_tokens:
        counts.append(power)
        power *= 2
    if counts[-1] != max_tokens:
        counts.append(max_tokens)
    return counts


def profile_hw(models: dict[str, tuple[str, object]], dtype: str, timing: Timing, on_timed=None,
               setups: dict | None = None, engine: str = "eager") -> dict:
    """A sequoia-profile/1 artifact timing each model of `models` ({role: (name, model)}, the
    target first) as `timing` says, with the forwards of `engine` (kv.py; a placed model runs
    eager); `setups` ({role: setup}) are recorded beside each model's times. `on_timed()` follows
    every burst, warm-up included (`bursts` of them in all)."""
    counts = check_request(models, timing)
    timers = {role: forward_timer(model, timing.context_length, counts, timing.seed, engine)
              for role, (_, model) in models.items()}
    for timer in timers.values():
        for count in counts:
            for _ in range(timing.warmup):
                timer(count)
                if on_timed:
                    on_timed()
    rounds = time_rounds(lambda role, count: timers[role](count), list(models), counts, timing.repeats, on_timed)
    table = curves(rounds, list(models), counts)
    sections = {role: {"model": name, **table[role]} for role, (name, _) in models.items()}
    for role, setup in (setups or {}).items():
        if role in sections:
            sections[role]["setup"] = setup
    device = input_device(models["target"][1])
    target_t1 = [one_round["target", 1] for one_round in rounds]
    engine = engine_of(models["target"][1], engine)
    return profile_artifact(machine_facts(device, dtype, engine), timing.context_length, timing.repeats,
                            timing.warmup, sections, burst=BURST, target_t1_by_round=target_t1,
                            steady=steady(target_t1))


def profile(loaded: Loaded, timing: Timing, progress=None) -> dict:
    """The profile artifact of the loaded models (the draft too where one is loaded), with their
    names and setups; `progress(description, total)` returns a callable to advance by a burst."""
    resolved = loaded.resolved
    models = {"target": (resolved.target_name, loaded.target)}
    if loaded.draft is not None:
        models["draft"] = (resolved.draft_name, loaded.draft)
    counts = check_request(models, timing)
    on_timed = progress("timing", bursts(len(models), len(counts), timing)) if progress else None
    return profile_hw(models, resolved.dtype, timing, on_timed, resolved.setups, resolved.engine)


def bursts(models: int, counts: int, timing: Timing) -> int:
    """The bursts a profile times: per (model, count), its warm-up ones, then one out and one back
    in every round."""
    return models * counts * (timing.warmup + 2 * timing.repeats)


def steady(target_t1_by_round: list[float]) -> bool:
    """Whether every round found the machine alike: their target t(1) within STEADY of each other."""
    return max(target_t1_by_round) <= (1.0 + STEADY) * min(target_t1_by_round)


def check_settings(timing: Timing) -> list[int]:
    """The token counts to time; settings no model could serve are an error before any loads."""
    if timing.repeats < 1 or timing.warmup < 0 or timing.context_length < 0:
        raise BadInput("repeats must be >= 1, warmup and context_length >= 0", "repeats", "warmup", "context_length")
    check_seed(timing.seed)
    return token_counts(timing.max_tokens)


def check_request(models: dict[str, tuple[str, object]], timing: Timing) -> list[int]:
    """The token counts to time, checked against the models' context before any timing starts."""
    counts = check_settings(timing)
    limit = min(model_context(model) for _, model in models.values())
    if timing.context_length + timing.max_tokens > limit:
        raise BadInput(f"context_length {timing.context_length} + max_tokens {timing.max_tokens} is past the models'"
                       f" context of {limit}", "context_length", "max_tokens")
    return counts


def forward_timer(model, context_length: int, counts: list[int], seed: int = 0, engine: str = "eager"):
    """A function count -> milliseconds of one forward of `count` random tokens (with the tree mask
    path decode uses, in `engine`) on top of a cache of `context_length` random tokens, which it
    keeps: the fastest of BURST."""
    device, vocab = input_device(model), model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    cache = new_cache(model, engine, context_length + max(counts))
    with torch.inference_mode():
        prefix = torch.randint(0, vocab, (context_length,), generator=generator).to(device)
        if context_length:
            forward(cache, prefix, torch.arange(context_length, device=device), causal(context_length, device),
                    last=1, fixed=False)
    inputs = {count: (torch.randint(0, vocab, (count,), generator=generator).to(device),
                      context_length + torch.arange(count, device=device), causal(count, device)) for count in counts}

    def time_one(count: int) -> float:
        fastest = float("inf")
        with torch.inference_mode():
            for _ in range(BURST):
                sync(device)
                started = time.perf_counter()
                forward(cache, *inputs[count])
                sync(device)
                fastest = min(fastest, (time.perf_counter() - started) * 1000.0)
                keep(cache, context_length, [])
        return fastest

    return time_one


def time_rounds(time_one, roles: list[str], counts: list[int], rounds: int, on_timed=None) -> list[dict]:
    """Per round, {(role, count): ms}: every item timed on the way out (in an order rotated by one
    each round) and on the way back, and the two averaged; `on_timed()` after each timing."""
    items = [(role, count) for role in roles for count in counts]
    out = []
    for index in range(rounds):
        shift = index % len(items)
        order = items[shift:] + items[:shift]
        times = {item: [] for item in items}
        for item in order + order[::-1]:
            times[item].append(time_one(*item))
            if on_timed:
                on_timed()
        out.append({item: sum(pair) / 2 for item, pair in times.items()})
    return out


def curves(rounds: list[dict], roles: list[str], counts: list[int]) -> dict[str, dict]:
    """{role: {"ms": {count: ms}, "spread": {count: [low, high]}}}: each count's time over its
    model's t(1) of the same round, the draft's t(1) over the target's and the target's t(1), each
    the median over rounds; the spread is the interquartile range over rounds."""
    target_t1 = np.array([one_round["target", 1] for one_round in rounds])
    scale = float(np.median(target_t1))
    out = {}
    for role in roles:
        t1 = np.array([one_round[role, 1] for one_round in rounds])
        # The role's t(1) by round, in the target's scale: its median is the role's t(1).
        by_round = {1: target_t1 if role == "target" else t1 / target_t1 * scale}
        role_t1 = float(np.median(by_round[1]))
        for count in counts[1:]:
            by_round[count] = np.array([one_round[role, count] for one_round in rounds]) / t1 * role_t1
        ms = [float(np.median(by_round[count])) for count in counts]
        spread = [[float(x) for x in np.percentile(by_round[count], [25, 75])] for count in counts]
        out[role] = {"ms": {str(c): t for c, t in zip(counts, monotone(ms, spread))},
                     "spread": {str(c): s for c, s in zip(counts, spread)}}
    return out


def monotone(values: list[float], spread: list[list[float]]) -> list[float]:
    """The values made non-decreasing (least squares, pooling adjacent violators), each taking its
    pooled value only where that lies within its spread: a dip the data show beyond their spread
    is kept."""
    blocks = []  # [sum, count] of pooled runs
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, size = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += size
    fitted = [total / size for total, size in blocks for _ in range(size)]
    return [fit if low <= fit <= high else value for fit, value, (low, high) in zip(fitted, values, spread)]


def machine_facts(device: torch.device, dtype: str, engine: str = "eager") -> dict:
    facts = {"device": str(device), "dtype": dtype, "engine": engine, "torch": torch.__version__,
             "threads": torch.get_num_threads()}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts
