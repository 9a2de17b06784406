"""The hardware-aware planner (stages.optimize) on synthetic profiles."""

import math

import pytest
from sequoia_cli.stages.optimize import optimize

from sequoia_cli import artifacts
from sequoia_cli.acceptance import planning_acceptance
from sequoia_cli.cost import interpolate, predicted_speedup, step_ms
from sequoia_cli.errors import BadInput
from sequoia_cli.tree import best_tree, expected_tokens, level_widths, max_nodes, tree_table

COUNTS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


def acceptance(vector, **extra) -> dict:
    artifact = {"format": "sequoia-acceptance/1", "mode": "greedy", "acceptance": list(vector), **extra}
    return artifacts.check_acceptance("acc.json", artifact)


def profile(target, draft=None, counts=COUNTS) -> dict:
    """A checked profile; `target`/`draft` are functions of the token count (or dicts)."""
    def section(timing):
        ms = timing if isinstance(timing, dict) else {n: timing(n) for n in counts}
        return {"model": "m", "ms": {str(n): float(v) for n, v in ms.items()}}

    artifact = {"format": "sequoia-profile/1", "device": "cpu", "dtype": "float32", "context_length": 128,
                "target": section(target)}
    if draft is not None:
        artifact["draft"] = section(draft)
    return artifacts.check_profile("profile.json", artifact)


def flat(ms):
    return lambda n: ms


def linear(ms_per_token):
    return lambda n: ms_per_token * n


VECTORS = [[0.8, 0.1], [0.6, 0.2, 0.1], [0.1, 0.5, 0.2], [0.5, 0.0, 0.3], [0.35, 0.2, 0.1, 0.05, 0.05]]


def check_plan(tree: dict, acc: dict, prof: dict, max_size=None, max_depth=None, positional=False):
    """Everything a written plan must satisfy, whatever the profile."""
    artifacts.check_tree("tree.json", tree)
    plan = tree["plan"]
    vector = planning_acceptance(acc, positional)
    target_ms = artifacts.timings(prof["target"])
    draft_ms = artifacts.timings(prof["draft"]) if prof.get("draft") else None
    max_size = max(target_ms) if max_size is None else max_size
    max_depth = max_size - 1 if max_depth is None else max_depth
    candidates = plan["candidates"]

    # The tree is the plan's.
    assert tree["size"] == plan["size"] == len(tree["parents"])
    assert tree["depth"] == plan["depth"]
    assert tree["expected_tokens"] == pytest.approx(expected_tokens(tree["parents"], vector), rel=1e-12)
    assert plan["step_ms"] == pytest.approx(step_ms(tree["parents"], target_ms, draft_ms, vector), rel=1e-12)
    assert plan["autoregressive_ms_per_token"] == target_ms[1]
    assert plan["draft_counted"] == (draft_ms is not None)
    assert plan["ms_per_token"] == pytest.approx(plan["step_ms"] / tree["expected_tokens"], rel=1e-12)

    # The chosen plan is the argmax of its own candidates.
    best = max(candidates, key=lambda c: c["speedup"])
    assert plan["speedup"] == pytest.approx(best["speedup"], rel=1e-12)
    assert (plan["size"], plan["depth"]) == (best["size"], best["depth"])
    assert plan["speedup"] >= 1.0 - 1e-12  # size 1 (autoregressive) is always a candidate
    assert [c["speedup"] for c in candidates] == sorted((c["speedup"] for c in candidates), reverse=True)

    # Every candidate obeys the cost model and the bounds, once each.
    seen = set()
    table = tree_table(vector, max_size, max_depth)
    for c in candidates:
        assert c["speedup"] == pytest.approx(c["expected_tokens"] * target_ms[1] / c["step_ms"], rel=1e-12)
        assert c["ms_per_token"] == pytest.approx(c["step_ms"] / c["expected_tokens"], rel=1e-12)
        assert 1 <= c["size"] <= max_size
        assert 0 <= c["depth"] <= min(max_depth, c["size"] - 1)
        assert c["size"] <= max_nodes(table.width, c["depth"])
        assert (c["size"], c["depth"]) not in seen
        seen.add((c["size"], c["depth"]))
        assert c["expected_tokens"] == pytest.approx(table.expected[c["depth"], c["size"]], rel=1e-12)
        parents = best_tree(table, c["size"], c["depth"])
        if len(level_widths(parents)) - 1 == c["depth"]:  # else a looser bound built the candidate
            assert c["step_ms"] == pytest.approx(step_ms(parents, target_ms, draft_ms, vector), rel=1e-12)
    assert (1, 0) in seen
    return plan


# ---------------------------------------------------------------- interpolate


def test_interpolate_between_and_beyond():
    ms = {1: 10.0, 4: 40.0, 8: 48.0}
    assert interpolate(ms, 1) == 10.0
    assert interpolate(ms, 2) == pytest.approx(20.0)
    assert interpolate(ms, 3) == pytest.approx(30.0)
    assert interpolate(ms, 4) == 40.0
    assert interpolate(ms, 6) == pytest.approx(44.0)
    assert interpolate(ms, 8) == 48.0
    # Beyond the last point: the last segment's slope, (48 - 40) / 4 = 2 per token.
    assert interpolate(ms, 10) == pytest.approx(52.0)
    assert interpolate(ms, 108) == pytest.approx(248.0)


def test_interpolate_beyond_never_drops_below_the_last_point():
    ms = {1: 10.0, 2: 20.0, 4: 15.0}
    assert interpolate(ms, 3) == pytest.approx(17.5)
    assert interpolate(ms, 8) == 15.0
    assert interpolate(ms, 1000) == 15.0


def test_interpolate_single_point_is_flat():
    assert interpolate({1: 7.5}, 1) == 7.5
    assert interpolate({1: 7.5}, 64) == 7.5


def test_interpolate_is_monotone_for_monotone_timings():
    ms = {1: 5.0, 2: 5.5, 8: 6.0, 64: 30.0}
    values = [interpolate(ms, n) for n in range(1, 200)]
    assert all(b >= a for a, b in zip(values, values[1:]))


# ---------------------------------------------------------------- choices


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("draft", [None, flat(0.0001), flat(1.0)], ids=["no-draft", "free-draft", "cheap-draft"])
def test_flat_target_chooses_the_largest_tree(vector, draft):
    acc, prof = acceptance(vector), profile(flat(100.0), draft)
    tree = optimize(acc, prof)
    plan = check_plan(tree, acc, prof)
    assert plan["size"] == 64
    assert plan["speedup"] > 1.0


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("draft", [None, flat(0.0001), linear(30.0)], ids=["no-draft", "free-draft", "costly-draft"])
def test_linear_target_chooses_autoregressive(vector, draft):
    # Every extra verified token costs as much as a whole step: nothing beats size 1.
    acc, prof = acceptance(vector), profile(linear(100.0), draft)
    tree = optimize(acc, prof)
    plan = check_plan(tree, acc, prof)
    assert plan["size"] == 1
    assert plan["depth"] == 0
    assert tree["parents"] == [-1]
    assert plan["speedup"] == pytest.approx(1.0)


def test_nearly_linear_target_chooses_a_tiny_tree():
    # The second token is almost free, the rest cost the full price: a size-2 chain wins.
    target = {1: 100.0, 2: 101.0, 3: 201.0, 4: 301.0, 8: 701.0, 16: 1501.0}
    acc, prof = acceptance([0.8, 0.1]), profile(target)
    plan = check_plan(optimize(acc, prof), acc, prof)
    assert (plan["size"], plan["depth"]) == (2, 1)


def test_costly_draft_makes_the_tree_strictly_shallower():
    acc = acceptance([0.8, 0.1])
    free = optimize(acc, profile(flat(100.0)))
    costly_profile = profile(flat(100.0), flat(50.0))  # draft forward = 50% of the target's
    costly = optimize(acc, costly_profile)
    check_plan(costly, acc, costly_profile)
    assert costly["plan"]["depth"] < free["plan"]["depth"]
    assert costly["plan"]["speedup"] < free["plan"]["speedup"]
    assert free["plan"]["draft_counted"] is False and costly["plan"]["draft_counted"] is True


@pytest.mark.parametrize("vector", VECTORS + [[0.95], [0.5, 0.5]])
def test_costly_draft_never_deepens_the_tree(vector):
    acc = acceptance(vector)
    free = optimize(acc, profile(flat(100.0), flat(0.0001)))
    costly_profile = profile(flat(100.0), flat(50.0))
    costly = optimize(acc, costly_profile)
    check_plan(costly, acc, costly_profile)
    assert costly["plan"]["depth"] <= free["plan"]["depth"]


@pytest.mark.parametrize("vector", VECTORS)
def test_free_draft_equals_no_draft_in_the_limit(vector):
    acc = acceptance(vector)
    none = optimize(acc, profile(flat(100.0)))["plan"]
    tiny = optimize(acc, profile(flat(100.0), flat(1e-9)))["plan"]
    assert none["speedup"] == pytest.approx(tiny["speedup"], rel=1e-6)


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("max_size, max_depth", [(None, None), (20, None), (32, 3), (64, 1), (1, None), (8, 0)])
def test_bounds_are_respected(vector, max_size, max_depth):
    acc = acceptance(vector)
    prof = profile(lambda n: 100.0 + 2.0 * n, lambda n: 10.0 + 0.5 * n)
    tree = optimize(acc, prof, max_size, max_depth)
    plan = check_plan(tree, acc, prof, max_size, max_depth)
    assert plan["size"] <= (max_size or 64)
    if max_depth is not None:
        assert plan["depth"] <= max_depth


def test_realistic_profile_with_sparse_counts():
    # Counts far apart: the planner must interpolate the target and the draft.
    target = {1: 310.0, 2: 318.0, 4: 335.0, 16: 380.0, 64: 620.0, 128: 1100.0}
    draft = {1: 95.0, 2: 97.0, 8: 110.0}  # beyond 8: extrapolated
    acc, prof = acceptance([0.61, 0.12, 0.05]), profile(target, draft)
    tree = optimize(acc, prof)
    plan = check_plan(tree, acc, prof)
    assert 1 < plan["size"] <= 128


def test_written_tree_passes_the_reader(tmp_path):
    acc = acceptance([0.6, 0.2, 0.1], temperature=0.0, draft="d", target="t")
    prof = profile(flat(100.0), flat(10.0))
    tree = optimize(acc, prof, max_size=32, max_depth=6)
    path = str(tmp_path / "tree.json")
    artifacts.write_json(path, tree)
    again = artifacts.read_tree(path)
    assert again["parents"] == tree["parents"]
    assert again["plan"]["size"] == tree["size"]
    assert again["source"]["mode"] == "greedy"
    assert again["source"]["draft"] == "d"
    assert again["acceptance"] == [0.6, 0.2, 0.1]
    assert again["format"] == "sequoia-tree/1"


def test_rows_by_level_are_planned_with_unless_positional():
    # Code-like: the first child is often rejected right after a rejection, deep runs rarely.
    acc = acceptance([0.6, 0.1], acceptance_by_level=[[0.3, 0.2], [0.9, 0.05]])
    prof = profile(lambda n: 100.0 + n, flat(5.0))
    by_level, positional = optimize(acc, prof), optimize(acc, prof, positional=True)
    check_plan(by_level, acc, prof)
    check_plan(positional, acc, prof, positional=True)
    assert by_level["planned_by"] == "level" and positional["planned_by"] == "positional"
    assert by_level["acceptance_by_level"] == positional["acceptance_by_level"] == [[0.3, 0.2], [0.9, 0.05]]
    assert by_level["expected_tokens"] == pytest.approx(expected_tokens(by_level["parents"], [[0.3, 0.2], [0.9, 0.05]]))
    assert positional["expected_tokens"] == pytest.approx(expected_tokens(positional["parents"], [0.6, 0.1]))
    # Deep runs are likelier by level, so its tree is deeper.
    assert by_level["depth"] > positional["depth"]


@pytest.mark.parametrize("max_size", [65, 100, 1000])
def test_max_size_past_the_profile_is_bad_input(max_size):
    with pytest.raises(BadInput, match=rf"max_size {max_size}.*64") as caught:
        optimize(acceptance([0.6, 0.2]), profile(flat(100.0)), max_size=max_size)
    assert caught.value.worded_as_options().startswith(f"--max-size {max_size}")


@pytest.mark.parametrize("max_size, max_depth, option", [(0, None, "--max-size"), (-3, None, "--max-size"),
                                                         (8, -1, "--max-depth")])
def test_bad_bounds_are_bad_input(max_size, max_depth, option):
    with pytest.raises(BadInput, match=option.removeprefix("--").replace("-", "_")) as caught:
        optimize(acceptance([0.6, 0.2]), profile(flat(100.0)), max_size=max_size, max_depth=max_depth)
    assert option in caught.value.worded_as_options()


def test_profile_with_one_point_only_allows_size_one():
    acc, prof = acceptance([0.9]), profile({1: 100.0})
    plan = check_plan(optimize(acc, prof), acc, prof)
    assert plan["size"] == 1
    with pytest.raises(BadInput):
        optimize(acc, prof, max_size=2)


def test_speedup_matches_hand_computation():
    # Chain of 2 with a = 0.5, target 100 ms at 1 and 2 tokens, draft 20 ms: E = 1.5,
    # step = 100 + 20 = 120, speedup = 1.5 * 100 / 120 = 1.25; size 1 gives 1.0.
    acc, prof = acceptance([0.5]), profile({1: 100.0, 2: 100.0}, {1: 20.0})
    tree = optimize(acc, prof)
    plan = check_plan(tree, acc, prof)
    assert tree["parents"] == [-1, 0]
    assert plan["speedup"] == pytest.approx(1.25)
    assert plan["step_ms"] == pytest.approx(120.0)
    assert math.isclose(plan["ms_per_token"], 80.0)
    assert {(c["size"], c["depth"]) for c in plan["candidates"]} == {(1, 0), (2, 1)}


def test_draft_cost_counts_the_width_of_each_level():
    # Levels of widths 1, 2, 3 (size 6, depth 2): the target reads 6 tokens, the draft reads the
    # root, then the 2 nodes of level 1; the deepest level is never read.
    # target(6) = 100 + (170 - 100) * 5/7 = 150; draft(1) = 10, draft(2) = 30: 190 ms.
    parents = [-1, 0, 0, 1, 1, 2]
    target_ms, draft_ms = {1: 100.0, 8: 170.0}, {1: 10.0, 2: 30.0, 8: 100.0}
    assert step_ms(parents, target_ms, draft_ms) == pytest.approx(190.0)
    # The same nodes as a chain of 5: target(6) + 5 draft forwards of 1 token = 150 + 50.
    assert step_ms(list(range(-1, 5)), target_ms, draft_ms) == pytest.approx(200.0)
    # A star of 4: one draft forward of the root; without draft timings the draft is free.
    assert step_ms([-1, 0, 0, 0], target_ms, draft_ms) == pytest.approx(100.0 + 70.0 * 3 / 7 + 10.0)
    assert step_ms([-1, 0, 0, 0], target_ms, None) == pytest.approx(130.0)
    # Between measured draft counts: draft(3) = 30 + 70/6.
    assert step_ms([-1, 0, 0, 0, 1, 2, 3], target_ms, draft_ms) == pytest.approx(160.0 + 10.0 + 30.0 + 70.0 / 6)


def test_the_drafts_first_level_also_reads_an_accepted_node_of_the_deepest_level():
    # A chain of 2 with a = [0.5]: the walk reaches depth 2 with probability 0.25, and then the
    # draft reads that node beside the new root: its first level costs 0.75 * 10 + 0.25 * 30.
    target_ms, draft_ms = {1: 100.0, 8: 100.0}, {1: 10.0, 2: 30.0}
    assert step_ms([-1, 0, 1], target_ms, draft_ms, [0.5]) == pytest.approx(100.0 + 15.0 + 10.0)
    # Level rows: reaching depth 2 takes 0.5 (row 0) * 0.9 (row 1).
    assert step_ms([-1, 0, 1], target_ms, draft_ms, [[0.5], [0.9]]) == pytest.approx(100.0 + 19.0 + 10.0)
    # Two leaves at the bottom: either accepted one is left unread. Without a vector: 1 token.
    assert step_ms([-1, 0, 0], target_ms, draft_ms, [0.5, 0.3]) == pytest.approx(100.0 + 0.2 * 10 + 0.8 * 30)
    assert step_ms([-1, 0, 1], target_ms, draft_ms) == pytest.approx(120.0)


def test_predicted_speedup_by_hand():
    # Star of 3 with a = [0.5, 0.3]: E = 1 + 0.5 + 0.3 = 1.8; step = 100 + 10 = 110 ms;
    # speedup = 1.8 * 100 / 110 (one draft timing: 2 tokens cost as much as 1).
    assert predicted_speedup([-1, 0, 0], [0.5, 0.3], {1: 100.0, 4: 100.0}, {1: 10.0}) == pytest.approx(1.8 / 1.1)
