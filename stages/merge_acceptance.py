"""merge-acceptance: the shards of one measurement (measure-acceptance --shard I/N) merged from
their counts and ranks, so that the result equals the measurement of all their prompts.

Every input is checked before anything is merged: each has counts of its width, they come from one
measurement (same models, setups, sampling, width, calibration bins and shard count) and together
they are each of its shards once. A calibration is summed bin by bin; shards with and without one
are refused, since a calibration of some shards' children only would pass for the whole's.
"""

import re
from itertools import islice

from sequoia_cli.acceptance import acceptance_from_counts, merged_calibration, merged_counts
from sequoia_cli.errors import BadInput

# What must agree between shards: the models and their setups, the sampling setting, the width.
SAME = ("draft", "target", "draft_setup", "target_setup", "mode", "temperature", "top_p", "width")
# What the merge computes again rather than copies from the first shard.
DERIVED = ("format", "mode", "temperature", "top_p", "width", "acceptance", "rejected_all", "samples", "stderr",
           "acceptance_by_level", "samples_by_level", "stderr_by_level", "counts", "shard", "prompts",
           "outside_draft_vocab", "ranks", "calibration")


def merge_acceptance(shards: list[tuple[str, dict]]) -> dict:
    """[(path, checked acceptance artifact)] -> the merged artifact."""
    for path, shard in shards:
        check_mergeable(path, shard)
    (first_path, first), *others = shards
    for path, shard in others:
        for key in SAME:
            if shard.get(key) != first.get(key):
                raise BadInput(f"{path}: '{key}' is {shard.get(key)!r} but {first_path} has {first.get(key)!r}:"
                               " shards of one measurement only")
        if len(shard["counts"]) != len(first["counts"]):
            raise BadInput(f"{path}: counts of {len(shard['counts'])} levels, {first_path} of {len(first['counts'])}")
        if calibration_bins(shard) != calibration_bins(first):
            raise BadInput(f"{path}: {calibration_words(shard)} but {first_path} has {calibration_words(first)}:"
                           " shards of one measurement only")
    check_complete(shards)
    artifacts = [shard for _, shard in shards]
    counts = merged_counts(artifacts)
    # A shard's positions are its counts' total; its fraction outside the draft's vocabulary
    # times those positions is a whole count of tokens.
    positions = [sum(map(sum, s["counts"])) for s in artifacts]
    outside = sum(round(s.get("outside_draft_vocab", 0.0) * n) for s, n in zip(artifacts, positions))
    run = {key: value for key, value in first.items() if key not in DERIVED}
    merged = acceptance_from_counts(counts, first["mode"], first.get("temperature"), first.get("top_p"),
                                    first["width"], **run)
    merged["prompts"] = sum(s.get("prompts", 0) for s in artifacts)
    if all("outside_draft_vocab" in s for s in artifacts):  # a shard without it would count as none outside
        merged["outside_draft_vocab"] = outside / sum(positions) if sum(positions) else 0.0
    if all("ranks" in s for s in artifacts):  # each shard's prompts are its own, so they never collide
        prompts = sorted((int(p), ranks) for s in artifacts for p, ranks in s["ranks"].items())
        merged["ranks"] = {str(p): ranks for p, ranks in prompts}
    if "calibration" in first:  # then every shard has one, of the same bins
        merged["calibration"] = merged_calibration(artifacts)
    return merged


def calibration_bins(shard: dict) -> list[float] | None:
    """The edges of a shard's calibration bins; None without a calibration."""
    return shard["calibration"]["edges"] if "calibration" in shard else None


def calibration_words(shard: dict) -> str:
    edges = calibration_bins(shard)
    return "no 'calibration'" if edges is None else f"calibration edges {edges}"


def check_mergeable(path: str, shard: dict) -> None:
    """What merging needs of one input beyond its reader's checks: counts, a width they agree
    with, and setups that are objects (as measure-acceptance writes them)."""
    if "counts" not in shard:
        raise BadInput(f"{path}: no 'counts' (a vector written by hand, or kept without its counts):"
                       " cannot merge exactly")
    if "width" not in shard:
        raise BadInput(f"{path}: no 'width': cannot tell the counts' ranks")
    for level, row in enumerate(shard["counts"]):
        if len(row) != shard["width"] + 1:
            raise BadInput(f"{path}: 'counts[{level}]' has {len(row)} entries, but 'width' {shard['width']} makes"
                           f" {shard['width'] + 1} (none accepted, then ranks 1..{shard['width']})")
    for key in ("draft_setup", "target_setup"):
        if shard.get(key) is not None and not isinstance(shard[key], dict):
            raise BadInput(f"{path}: '{key}' is {shard[key]!r}, not an object of quantize, vocab, placement")


def check_complete(shards: list[tuple[str, dict]]) -> None:
    """Several inputs are the shards I/N of one N, each once, none missing; a single input may be
    a whole measurement."""
    if len(shards) == 1 and "shard" not in shards[0][1]:
        return
    seen, parts_of = {}, {}
    for path, shard in shards:
        if "shard" not in shard:
            raise BadInput(f"{path}: no 'shard': a whole measurement, not one of several to merge")
        part, parts = shard_numbers(path, shard["shard"])
        if (part, parts) in seen:
            raise BadInput(f"{path}: shard {part}/{parts} again (also {seen[part, parts]})")
        seen[part, parts] = path
        parts_of.setdefault(parts, path)
    if len(parts_of) > 1:
        (parts, path), (other, other_path) = list(parts_of.items())[:2]
        raise BadInput(f"{other_path}: a shard of {other} ({path} is of {parts}): shards of one measurement only")
    if len(seen) < parts:
        # The first few missing are found within a few steps past the shards given, however large N is.
        missing = [f"{part}/{parts}" for part in islice((p for p in range(parts) if (p, parts) not in seen), 3)]
        more = parts - len(seen) - len(missing)
        raise BadInput(f"shard {', '.join(missing)}{f' and {more} more' if more else ''}"
                       f" {'is' if parts - len(seen) == 1 else 'are'} missing: merge every shard of the {parts}")


def shard_numbers(path: str, shard) -> tuple[int, int]:
    """(I, N) of a shard field "I/N"."""
    found = re.fullmatch(r"([0-9]{1,18})/([0-9]{1,18})", shard) if isinstance(shard, str) else None
    if not found or int(found[1]) >= int(found[2]):
        raise BadInput(f"{path}: 'shard' is {shard!r}, not I/N with 0 <= I < N")
    return int(found[1]), int(found[2])
