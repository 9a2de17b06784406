"""The bench's statistics: geometric means and pooled ratios over prompts with 95% percentile
bootstrap intervals (resampling prompts: a prompt's steps are not independent of each other), and
the checks of a block's per-prompt results."""

from collections.abc import Callable

import numpy as np


def geometric_interval(values: list[float], resamples: int, seed: int) -> dict:
    """The geometric mean of `values` with a 95% percentile-bootstrap interval (resampling the
    values, i.e. the prompts). `wide` marks an interval reaching past +-5% of the value."""
    logs = np.log(np.asarray(values, dtype=float))
    value = float(np.exp(logs.mean()))
    if len(logs) < 2:
        return {"value": value, "low": None, "high": None, "n": len(logs), "wide": True}
    picks = np.random.default_rng(seed).integers(0, len(logs), size=(resamples, len(logs)))
    low, high = np.exp(np.percentile(logs[picks].mean(axis=1), [2.5, 97.5]))
    return {"value": value, "low": float(low), "high": float(high), "n": len(logs),
            "wide": bool(high > 1.05 * value or low < 0.95 * value)}


def pooled_interval(sums: list[float], counts: list[float], resamples: int, seed: int,
                    base: tuple[list[float], list[float]] | None = None) -> dict:
    """sum(sums) / sum(counts) over the prompts (e.g. tokens per step over every step of every
    prompt), over the base's own such ratio on the same prompts when given, with a 95% percentile
    bootstrap that resamples prompts (a prompt's steps stay together: they are not independent).
    `wide` marks an interval reaching past +-5% of the value."""
    parts = [np.asarray(x, dtype=float) for x in (sums, counts) + (base or ())]

    def ratio(picks):
        totals = [part[picks].sum(axis=-1) for part in parts]
        return totals[0] / totals[1] / (totals[2] / totals[3] if base else 1.0)

    value = float(ratio(np.arange(len(parts[0]))))
    if len(parts[0]) < 2:
        return {"value": value, "low": None, "high": None, "n": len(parts[0]), "wide": True}
    picks = np.random.default_rng(seed).integers(0, len(parts[0]), size=(resamples, len(parts[0])))
    low, high = (float(x) for x in np.percentile(ratio(picks), [2.5, 97.5]))
    return {"value": value, "low": low, "high": high, "n": len(parts[0]),
            "wide": bool(high > 1.05 * value or low < 0.95 * value)}


def per_prompt(results: list[dict], key: Callable[[dict], float]) -> list[float] | None:
    """`key` of each prompt's result; None if any prompt failed or has nothing to measure."""
    if any(r is None or "error" in r or not r.get("tokens") or not r.get("steps") or not r.get("seconds")
           for r in results):
        return None
    return [key(r) for r in results]


def failure(results: list[dict]) -> str | None:
    """The first prompt's error, if any prompt failed."""
    return next((r["error"] for r in results if r and "error" in r), None)


def first_difference(outputs: list[list[int]], reference: list[list[int]]) -> str:
    """"yes" if every prompt's output is the reference's, else where the first one departs from it."""
    for index, (out, ref) in enumerate(zip(outputs, reference)):
        if out != ref:
            return f"no: prompt {index} differs at token {departs_at(out, ref)}"
    return "yes"


def departs_at(output: list[int], reference: list[int]) -> int:
    """The first position where two different outputs differ (the shorter one's length where one
    continues the other)."""
    return next((i for i, (a, b) in enumerate(zip(output, reference)) if a != b), min(len(output), len(reference)))
