"""profile-hw: how long one forward of n new tokens takes on this machine, on a KV cache of
`context_length` tokens, for the token counts the optimizer weighs."""

import statistics
import time

import torch
from transformers import DynamicCache

from sequoia_cli.artifacts import profile_artifact
from sequoia_cli.engine import causal, context_length as model_context, forward, keep, sync
from sequoia_cli.errors import BadInput


def token_counts(max_tokens: int) -> list[int]:
    """1..8, then powers of two up to max_tokens."""
    if max_tokens < 1:
        raise BadInput(f"--max-tokens is {max_tokens}: profile at least 1 token")
    counts = list(range(1, min(8, max_tokens) + 1))
    power = 16
    while power <= max_tokens:
        counts.append(power)
        power *= 2
    if counts[-1] != max_tokens:
        counts.append(max_tokens)
    return counts


def profile_hw(models: dict[str, tuple[str, object]], dtype: str, max_tokens: int, context_length: int,
               repeats: int, warmup: int, seed: int = 0, on_count_done=None, setups: dict | None = None) -> dict:
    """A sequoia-profile/1 artifact timing each model of `models` ({role: (name, model)}, the
    target first) at the counts of `token_counts(max_tokens)`; `setups` ({role: setup}) are
    recorded beside each model's times."""
    counts = check_request(models, max_tokens, context_length, repeats, warmup)
    sections = {role: {"model": name, "ms": profile_model(model, context_length, counts, repeats, warmup, seed,
                                                          on_count_done)}
                for role, (name, model) in models.items()}
    for role, setup in (setups or {}).items():
        if role in sections:
            sections[role]["setup"] = setup
    device = models["target"][1].device
    return profile_artifact(machine_facts(device, dtype), context_length, repeats, warmup, sections)


def check_request(models: dict[str, tuple[str, object]], max_tokens: int, context_length: int, repeats: int,
                  warmup: int) -> list[int]:
    """The token counts to time; bad input is an error before any timing starts."""
    if repeats < 1 or warmup < 0 or context_length < 0:
        raise BadInput("--repeats must be >= 1, --warmup and --context-length >= 0")
    counts = token_counts(max_tokens)
    limit = min(model_context(model) for _, model in models.values())
    if context_length + max_tokens > limit:
        raise BadInput(f"--context-length {context_length} + --max-tokens {max_tokens} is past the models'"
                       f" context of {limit}")
    return counts


def profile_model(model, context_length: int, counts: list[int], repeats: int, warmup: int,
                  seed: int = 0, on_count_done=None) -> dict[str, float]:
    """Median milliseconds of one forward of n tokens (with the tree mask path decode uses) on top
    of a cache of `context_length` random tokens, for each n in `counts`."""
    device = model.device
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache(config=model.config)
    ms = {}
    with torch.inference_mode():
        prefix = torch.randint(0, vocab, (context_length,), generator=generator).to(device)
        if context_length:
            forward(model, cache, prefix, torch.arange(context_length, device=device), causal(context_length, device))
        for count in counts:
            tokens = torch.randint(0, vocab, (count,), generator=generator).to(device)
            positions = context_length + torch.arange(count, device=device)
            mask = causal(count, device)
            times = []
            for run in range(warmup + repeats):
                sync(device)
                started = time.perf_counter()
                forward(model, cache, tokens, positions, mask)
                sync(device)
                if run >= warmup:
                    times.append((time.perf_counter() - started) * 1000.0)
                keep(cache, context_length, [])
            ms[str(count)] = statistics.median(times)
            if on_count_done:
                on_count_done()
    return ms


def machine_facts(device: torch.device, dtype: str) -> dict:
    facts = {"device": str(device), "dtype": dtype, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts
