"""The plan of dynamic trees: growth that weighs what a level opens, the predicted speed of the
grown trees, and the guard that never plans them slower than the static tree of the same file."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sequoia_cli.stages.optimize import optimize

from sequoia_cli import dynamic
from sequoia_cli.acceptance import CALIBRATION_EDGES, calibration_from_counts
from sequoia_cli.cost import interpolate
from sequoia_cli.dynamic import filled_rates
from sequoia_cli.dynamic_plan import confidence_of, draw_bins, predict
from sequoia_cli.sampling import Sampling
from tests.test_decode import prompt, reference_greedy
from tests.tiny import TEST_DEVICE, decoder, tiny_model

# A CPU profile measured steady that is slower at 2 tokens than at 3 to 6, with a cheap draft.
TARGET_MS = {1: 121.9, 2: 142.6, 3: 111.3, 4: 106.7, 5: 108.3, 6: 108.8, 7: 132.5, 8: 140.5}
PROFILE = {"target": {"ms": {str(n): ms for n, ms in TARGET_MS.items()}}, "draft": {"ms": {"1": 25.9}}}
# Acceptance rising from 0.35 in the low bins to 1.0 in the top one, most children tried in the
# top bins (as a code workload's greedy calibration has them), and a first child accepted 0.914.
RATES = [.35, .35, .35, .35, .38, .47, .54, .65, .72, .8, .88, .92, .95, .97, 1.0]
TRIED = [8, 5, 15, 20, 22, 25, 25, 31, 25, 24, 27, 44, 34, 79, 416]
CALIBRATION = calibration_from_counts(CALIBRATION_EDGES, TRIED, [round(r * t) for r, t in zip(RATES, TRIED)])
ACCEPTANCE = {"acceptance": [0.914, 0.03, 0.01, 0.005], "calibration": CALIBRATION, "samples": 701}


@pytest.fixture(scope="module")
def plan() -> dict:
    return optimize(ACCEPTANCE, PROFILE, max_depth=12, method="dynamic")


def test_a_first_level_that_fails_to_pay_alone_is_read_for_the_levels_it_opens(plan):
    growth = dynamic.growth_of(plan["dynamic"])
    first_level_alone = growth.gain * growth.token_ms - (25.9 + TARGET_MS[2] - TARGET_MS[1])
    assert first_level_alone < 0  # a rule that weighs one level at a time stops at the root, every step
    assert dynamic.worth_reading(1.0, 1, 1, 1, 0, growth)


def test_grown_trees_draft_and_are_predicted_no_slower_than_the_static_tree(plan):
    predicted = plan["dynamic"]["prediction"]
    assert not plan["dynamic"]["fallback"]
    assert predicted["draft_forwards_per_step"] > 1 and predicted["undrafted_share"] < 0.05
    assert predicted["ms_per_token"] <= plan["plan"]["ms_per_token"]
    assert predicted["tokens_per_step"] > 1 + plan["dynamic"]["gain"]


def test_grown_trees_draft_in_decode_and_keep_the_targets_greedy_tokens(plan):
    growth = dynamic.growth_of(plan["dynamic"])
    target = tiny_model("llama", seed=1, context=96)
    ids = prompt(6, 0)
    result = decoder(target, target, dynamic.budget_parents(growth), Sampling(), 40, growth=growth).generate(
        ids, torch.Generator(device=TEST_DEVICE))
    assert result.draft_forwards > 0 and result.undrafted_steps < len(result.accepted)
    assert result.output_ids == reference_greedy(target, ids, 40)


def random_profile(data, monotone: bool) -> dict:
    counts = data.draw(st.integers(2, 12))
    start = data.draw(st.floats(5.0, 300.0))
    steps = data.draw(st.lists(st.floats(0.0 if monotone else -0.2, 0.5), min_size=counts - 1, max_size=counts - 1))
    target = [start]
    for step in steps:
        target.append(max(1.0, target[-1] + step * start))
    draft = data.draw(st.floats(0.02, 1.0)) * start
    return {"target": {"ms": {str(n + 1): ms for n, ms in enumerate(target)}},
            "draft": {"ms": {"1": draft, str(counts): draft * data.draw(st.floats(1.0, 2.0))}}}


def random_acceptance(data) -> dict:
    bins = len(CALIBRATION_EDGES) - 1
    tried = data.draw(st.lists(st.integers(0, 60), min_size=bins, max_size=bins))
    rates = data.draw(st.lists(st.floats(0.0, 1.0), min_size=bins, max_size=bins))
    first = data.draw(st.floats(0.05, 0.95))
    second = data.draw(st.floats(0.0, 1.0)) * (1 - first)
    accepted = [round(r * t) for r, t in zip(rates, tried)]
    return {"acceptance": [first, second, 0.0], "samples": max(1, sum(tried) // 2),
            "calibration": calibration_from_counts(CALIBRATION_EDGES, tried, accepted)}


@settings(max_examples=25, deadline=None)
@given(st.data(), st.booleans())
def test_the_plan_is_never_predicted_below_the_static_tree(data, monotone):
    profile, acceptance = random_profile(data, monotone), random_acceptance(data)
    tree = optimize(acceptance, profile, max_depth=data.draw(st.integers(1, 8)), method="dynamic")
    predicted, static = tree["dynamic"]["prediction"]["ms_per_token"], tree["plan"]["ms_per_token"]
    assert tree["dynamic"]["fallback"] == (predicted >= static)
    planned = static if tree["dynamic"]["fallback"] else predicted
    assert planned <= static


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_reading_pays_more_with_more_reach_and_a_last_level_is_weighed_alone(data):
    profile = random_profile(data, data.draw(st.booleans()))
    target_ms = {int(n): ms for n, ms in profile["target"]["ms"].items()}
    draft_ms = {int(n): ms for n, ms in profile["draft"]["ms"].items()}
    widths = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)))
    growth = dynamic.Growth(widths, data.draw(st.integers(1, 3)), (0.0, 1.0), (0.5,), data.draw(st.floats(0.1, 1.0)),
                            target_ms, draft_ms, data.draw(st.floats(1.0, 300.0)))
    level, size = data.draw(st.integers(0, len(widths) - 1)), data.draw(st.integers(1, 6))
    low, high = sorted(data.draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2)))
    if dynamic.worth_reading(low, 1, 1, size, level, growth):
        assert dynamic.worth_reading(high, 1, 1, size, level, growth)
    if level == len(widths) - 1:  # nothing below to open: the level pays on its own or not at all
        added = min(widths[level], growth.children)
        alone = high * growth.gain * growth.token_ms >= (interpolate(draft_ms, 1) + interpolate(target_ms, size + added)
                                                         - interpolate(target_ms, size))
        assert dynamic.worth_reading(high, 1, 1, size, level, growth) == alone


def test_simulated_nodes_accept_each_rank_as_often_as_the_vector_says():
    growth = dynamic.growth_of(optimize(ACCEPTANCE, PROFILE, max_depth=4, method="dynamic")["dynamic"])
    vector = [0.6, 0.25]
    confidence = confidence_of(CALIBRATION, 701, vector, filled_rates(CALIBRATION), 2)
    accept = np.asarray(growth.rates)[draw_bins(confidence, 20000, 2, np.random.default_rng(1))]
    truth = np.minimum(1.0, accept * confidence.factors)
    assert truth[:, 0].mean() == pytest.approx(0.6, abs=0.01)
    assert ((1 - truth[:, 0]) * truth[:, 1]).mean() == pytest.approx(0.25, abs=0.01)


def test_later_children_are_never_more_probable_than_the_first_or_what_it_leaves():
    confidence = confidence_of(CALIBRATION, 701, ACCEPTANCE["acceptance"], filled_rates(CALIBRATION), 3)
    bins = draw_bins(confidence, 5000, 3, np.random.default_rng(2))
    lows = confidence.lows[bins]
    assert (lows[:, 1:] <= np.minimum(lows[:, :1], 1 - lows[:, :1]) + 1e-12).all()
    assert (np.diff(bins[:, 1:], axis=1) <= 0).all()


def test_a_draft_too_slow_for_any_tree_never_drafts_and_falls_back():
    profile = {"target": {"ms": {"1": 100.0, "8": 800.0}}, "draft": {"ms": {"1": 500.0}}}
    tree = optimize(ACCEPTANCE, profile, method="dynamic")
    predicted = predict(dynamic.growth_of(tree["dynamic"]),
                        confidence_of(CALIBRATION, 701, ACCEPTANCE["acceptance"], filled_rates(CALIBRATION), 1))
    assert predicted.draft_forwards_per_step == 0 and predicted.undrafted_share == 1
    assert tree["size"] == 1 and tree["dynamic"]["fallback"]  # no faster than the static tree: that one runs
