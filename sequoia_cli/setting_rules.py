"""The range of each sampling setting, checked by one function whether the value comes from the
command line (`sampling.sampling_setting`) or from a file (a tree's `source`, an acceptance
vector's setting: `schema`). Each returns the rule a value breaks, in words, or None. The seed's
range too, which a stats file records."""

import math

MAX_TEMPERATURE = 100.0
MAX_SEED = 2**63 - 1  # what a random generator takes


def temperature_fault(value) -> str | None:
    """The rule a sampling temperature of `value` breaks (None: none)."""
    if _is_number(value) and 0.0 < value <= MAX_TEMPERATURE:
        return None
    return f"it must be in (0, {MAX_TEMPERATURE:g}] (greedy for 0)"


def top_p_fault(value) -> str | None:
    """The rule a nucleus mass of `value` breaks (None: none)."""
    if _is_number(value) and 0.0 < value <= 1.0:
        return None
    return "it must be in (0, 1]"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
