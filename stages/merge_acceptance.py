"""merge-acceptance: the shards of one measurement (measure-acceptance --shard I/N) merged from
their counts and ranks, so that the result equals the measurement of all their prompts."""

from sequoia_cli.acceptance import acceptance_from_counts, merged_counts
from sequoia_cli.errors import BadInput

# What must agree between shards: the models and their setups, the sampling setting, the width.
SAME = ("draft", "target", "draft_setup", "target_setup", "mode", "temperature", "top_p", "width")
# What the merge computes again rather than copies from the first shard.
DERIVED = ("format", "mode", "temperature", "top_p", "width", "acceptance", "rejected_all", "samples", "stderr",
           "acceptance_by_level", "samples_by_level", "stderr_by_level", "counts", "shard", "prompts",
           "outside_draft_vocab", "ranks")


def merge_acceptance(shards: list[tuple[str, dict]]) -> dict:
    """[(path, checked acceptance artifact)] -> the merged artifact."""
    (first_path, first), *others = shards
    for path, shard in shards:
        if "counts" not in shard:
            raise BadInput(f"{path}: no 'counts' (a vector written by hand, or kept without its counts):"
                           " cannot merge exactly")
    for path, shard in others:
        for key in SAME:
            if shard.get(key) != first.get(key):
                raise BadInput(f"{path}: '{key}' is {shard.get(key)!r} but {first_path} has {first.get(key)!r}:"
                               " shards of one measurement only")
        if len(shard["counts"]) != len(first["counts"]):
            raise BadInput(f"{path}: counts of {len(shard['counts'])} levels, {first_path} of {len(first['counts'])}")
    seen = {}
    for path, shard in shards:
        if "shard" in shard and shard["shard"] in seen:
            raise BadInput(f"{path}: shard {shard['shard']} again (also {seen[shard['shard']]})")
        seen[shard.get("shard")] = path
    artifacts = [shard for _, shard in shards]
    counts = merged_counts(artifacts)
    samples = sum(s["samples"] for s in artifacts)
    # Each shard's fraction times its positions is a whole count of tokens.
    outside = sum(round(s.get("outside_draft_vocab", 0.0) * s["samples"]) for s in artifacts)
    run = {key: value for key, value in first.items() if key not in DERIVED}
    merged = acceptance_from_counts(counts, first["mode"], first.get("temperature"), first.get("top_p"),
                                    first["width"], **run)
    merged["prompts"] = sum(s.get("prompts", 0) for s in artifacts)
    if "outside_draft_vocab" in first:
        merged["outside_draft_vocab"] = outside / samples if samples else 0.0
    if all("ranks" in s for s in artifacts):  # each shard's prompts are its own, so they never collide
        prompts = sorted((int(p), ranks) for s in artifacts for p, ranks in s["ranks"].items())
        merged["ranks"] = {str(p): ranks for p, ranks in prompts}
    return merged
