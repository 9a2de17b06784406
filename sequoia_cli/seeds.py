"""Seeds: the range a run's seed takes, and each prompt's own random stream drawn from it."""

import torch

from sequoia_cli.errors import BadInput
from sequoia_cli.setting_rules import MAX_SEED


def check_seed(seed: int) -> None:
    """A seed is a number in 0..MAX_SEED."""
    if not 0 <= seed <= MAX_SEED:
        raise BadInput(f"seed is {seed}: it must be in 0..{MAX_SEED}", "seed")


def prompt_seed(seed: int, index: int) -> int:
    """Prompt `index`'s seed in a run seeded `seed`: a run is repeatable, and its prompts draw
    different numbers. A generator takes 64 bits: a large seed's product wraps around."""
    return (seed * 1_000_003 + index) % 2**64


def prompt_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """Prompt `index`'s own generator, on `device`."""
    return torch.Generator(device=device).manual_seed(prompt_seed(seed, index))
