"""Dynamic trees: which children a level keeps, exactness (greedy token for token against the
target's own generation, sampled by exact enumeration and by chi-square, with widths and depths
that depend on the draft's probabilities), the plan optimize writes and the commands' errors."""

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sequoia_cli.stages.optimize import optimize

from sequoia_cli import dynamic
from sequoia_cli.acceptance import CALIBRATION_EDGES, calibration_from_counts
from sequoia_cli.dynamic import filled_rates
from sequoia_cli.layout import tree_layout
from sequoia_cli.sampling import Sampling, verify_node
from tests.conftest import assert_one_line_error, sequoia
from tests.test_decode import assert_first_two_tokens_follow, prompt, reference_greedy
from tests.tiny import FAMILIES, TEST_DEVICE, decoder, noisy_copy, save_tiny_pair, tiny_model

# A calibration whose acceptance changes sharply where tiny models' probabilities lie (0.005 to
# 0.2), with two bins without data.
RATES = [0.05, 0.3, 0.6, 0.2, 0.5, 0.15, 0.0, 0.7, 0.3, 0.8, 0.4, 0.0, 0.9, 0.6, 0.95]  # 6, 11: empty
BINS = len(CALIBRATION_EDGES) - 1
TRIED = [0 if index in (6, 11) else 100 for index in range(BINS)]
CALIBRATION = calibration_from_counts(CALIBRATION_EDGES, TRIED, [round(r * t) for r, t in zip(RATES, TRIED)])
# Costs under which growth stops where the draft is unsure: a level is worth a draft forward while
# its nodes' estimated path acceptance sums to about 0.45, a node worth verifying from about 0.07.
SECTION = {"widths": [3, 3, 2, 2], "children": 3, "gain": 0.9, "token_ms": 6.0,
           "target_ms": {"1": 10.0, "16": 16.0}, "draft_ms": {"1": 2.0, "16": 3.0}, "calibration": CALIBRATION}
GROWTH = dynamic.growth_of(SECTION)


def test_filled_rates_take_the_nearest_measured_bin_the_lower_on_a_tie():
    rates = filled_rates(CALIBRATION)
    assert rates[6] == RATES[5] and rates[11] == RATES[10]  # ties: the lower neighbour
    assert [r for i, r in enumerate(rates) if i not in (6, 11)] == [r for i, r in enumerate(RATES) if i not in (6, 11)]
    empty = calibration_from_counts(CALIBRATION_EDGES, [0] * BINS, [0] * BINS)
    assert filled_rates(empty)[0] == pytest.approx(0.005)


def test_calibrated_reads_each_probabilitys_bin():
    probabilities = torch.tensor([0.0, 0.009, 0.01, 0.05, 0.099, 0.999, 1.0])
    bins = [0, 0, 1, 3, 3, 14, 14]  # [edge_i, edge_i+1), the last bin closed at 1
    assert dynamic.calibrated(probabilities, GROWTH).tolist() == pytest.approx([RATES[b] for b in bins])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), min_size=4, max_size=4), min_size=1, max_size=5),
       st.integers(1, 12), st.floats(0, 0.5))
def test_a_level_keeps_the_best_children_each_with_its_earlier_siblings(scores, cap, threshold):
    scores = torch.tensor(scores, dtype=torch.float64)
    real = torch.ones_like(scores, dtype=torch.bool)
    real[0, 3] = False  # a row that offered only three tokens
    kept = dynamic.choose(scores, real, cap, threshold).tolist()
    assert kept == sorted(kept) and len(kept) <= cap
    effective = scores.masked_fill(~real, -torch.inf).cummin(dim=-1).values.flatten()
    for index in kept:
        assert effective[index] >= threshold and effective[index] > 0
        if index % 4:
            assert index - 1 in kept  # never without the earlier sibling
    eligible = [i for i in range(len(effective)) if effective[i] >= threshold and effective[i] > 0]
    left_out = [i for i in eligible if i not in kept]
    assert len(kept) == min(cap, len(eligible))
    assert not left_out or min(effective[kept]) >= max(effective[left_out])


def exact_first_token(p: torch.Tensor, q: torch.Tensor, keep) -> tuple[torch.Tensor, set[int]]:
    """The exact distribution of the token a node's verification emits, over every ordered draw of
    three children without replacement from q, when `keep(tokens)` says how many of them are
    verified; and the counts kept seen."""
    out, counts = torch.zeros_like(p), set()
    for tokens in itertools.permutations(range(len(q)), 3):
        chance, left = 1.0, 1.0
        for token in tokens:
            chance, left = chance * float(q[token]) / left, left - float(q[token])
        count = keep(torch.tensor([tokens]))
        counts.add(count)
        kids = list(tokens[:count])
        _, rest, tried = verify_node(p, q, kids, "sequoia", [2.0] * count)  # every acceptance probability
        reach = chance
        for kid, accept in zip(kids, tried):
            out[kid] += reach * accept
            reach *= 1 - accept
        out += reach * rest
    return out, counts


P = torch.tensor([0.35, 0.05, 0.3, 0.2, 0.1], dtype=torch.float64)
Q = torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05], dtype=torch.float64)


def kept_count(scores_of, threshold: float):
    def keep(tokens):
        real = torch.ones_like(tokens, dtype=torch.bool)
        return len(dynamic.choose(scores_of(tokens, real), real, 3, threshold))
    return keep


def test_sampled_verification_with_a_width_decided_by_the_draft_is_exact():
    def scores(tokens, real):
        return dynamic.sampled_scores(Q[None], tokens, real, torch.ones(1, dtype=torch.float64), GROWTH)[0]
    out, counts = exact_first_token(P, Q, kept_count(scores, 0.2))
    assert len(counts) > 1  # how many children are verified depends on the draws
    torch.testing.assert_close(out, P, atol=1e-12, rtol=0)


def test_a_width_decided_by_a_childs_own_probability_is_not_exact():
    """The check above can fail: ranking a child by its own calibrated acceptance biases it."""
    def own(tokens, real):
        return dynamic.sampled_scores(Q[None], tokens, real, torch.ones(1, dtype=torch.float64), GROWTH)[1]
    out, counts = exact_first_token(P, Q, kept_count(own, 0.2))
    assert len(counts) > 1 and (out - P).abs().max() > 1e-3


def grown_sizes(monkeypatch) -> list[tuple[int, int]]:
    """(size, depth) of every tree the engine grows from now on."""
    seen, real = [], dynamic.grow

    def recording(*args):
        grown = real(*args)
        seen.append((len(grown.parents), tree_layout(grown.parents).depth))
        return grown
    monkeypatch.setattr("sequoia_cli.decoder.grow", recording)
    return seen


@pytest.mark.parametrize("family,engine", [(family, "eager") for family in FAMILIES] + [("llama", "static")])
def test_greedy_dynamic_decode_is_token_identical_to_generate_up_to_the_end_of_the_context(family, engine,
                                                                                           monkeypatch):
    target = tiny_model(family, seed=1, context=96)
    draft = noisy_copy(target, 0.4)
    decoding = decoder(target, draft, dynamic.budget_parents(GROWTH), Sampling(), 200, engine=engine, growth=GROWTH)
    sizes = grown_sizes(monkeypatch)
    for seed in range(3):
        ids = prompt(5 + 4 * seed, seed)
        result = decoding.generate(ids, torch.Generator(device=TEST_DEVICE))
        assert result.stopped_by == "context" and len(ids) + len(result.output_ids) == 96
        assert result.output_ids == reference_greedy(target, ids, 96 - len(ids))
    assert len(set(sizes)) > 2  # the trees differ from step to step, in size and depth
    assert len({depth for _, depth in sizes}) > 1
    if engine == "static":  # the forwards keep their shapes: a level at its cap, a tree at the budget
        assert set(decoding.caches.target.replays) == {(1, 1), (GROWTH.budget, GROWTH.budget)}
        assert set(decoding.caches.draft.replays) <= {(1, 1), (2, 1), *((w, w) for w in GROWTH.widths)}
        assert (GROWTH.widths[0], GROWTH.widths[0]) in decoding.caches.draft.replays


def cached_keys(cache) -> torch.Tensor:
    """The last layer's cached keys of the sequence (the cache's `length` entries): they read every
    earlier layer's attention, so an entry computed under a wrong mask shows."""
    return cache.kv.layers[-1].keys[0, :, :cache.length].float()


@pytest.mark.parametrize("engine", ["eager", "static"])
def test_dynamic_steps_leave_each_cache_as_reading_the_sequence_would(engine):
    # Greedy output is exact whatever the draft's cache holds; the draft's proposals are not.
    # The first level's cap is past the root's children, so a fixed-shape engine pads every level it
    # reads, and a cheap draft reads deep levels, whose nodes' entries then sit past the padding.
    growth = dynamic.growth_of({**SECTION, "widths": [4, 4, 3, 2], "draft_ms": {"1": 0.1, "16": 0.2}})
    target = tiny_model("llama", seed=1, context=96)
    draft = noisy_copy(target, 0.4)
    ids = prompt(7, 0)
    decoding = decoder(target, draft, dynamic.budget_parents(growth), Sampling(), 40, engine=engine, growth=growth)
    result = decoding.generate(ids, torch.Generator(device=TEST_DEVICE))
    assert max(result.step_tokens) > 2  # some steps accepted nodes below a padded level
    for model, cache in ((draft, decoding.caches.draft), (target, decoding.caches.target)):
        whole = model(torch.tensor([result.tokens[:cache.length]], device=TEST_DEVICE), use_cache=True)
        reread = whole.past_key_values.layers[-1].keys[0].float()
        torch.testing.assert_close(cached_keys(cache), reread, atol=1e-4, rtol=1e-4)


def test_sampled_dynamic_tokens_follow_the_target(monkeypatch):
    target = tiny_model("qwen2", vocab=6, seed=2)
    sizes = grown_sizes(monkeypatch)
    growth = dynamic.growth_of({**SECTION, "widths": [2, 2], "children": 2})
    for engine in ("eager", "static"):
        assert_first_two_tokens_follow(target, noisy_copy(target, 0.6, seed=1), dynamic.budget_parents(growth),
                                       "sequoia", engine=(engine, False), growth=growth)
    assert len(set(sizes)) > 1


def test_budget_parents_is_as_wide_and_deep_as_the_caps():
    parents = dynamic.budget_parents(GROWTH)
    layout = tree_layout(parents)
    assert len(parents) == GROWTH.budget == 11 and layout.depth == 4
    assert [b - a for a, b in zip(layout.level_starts, layout.level_starts[1:])] == [1, 3, 3, 2, 2]


# ---- the commands ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """measure-acceptance, profile-hw and optimize --method dynamic on a tiny pair whose target
    is 4 times as deep as its draft (same logits), so that drafting pays."""
    work = tmp_path_factory.mktemp("dynamic")
    draft, target = save_tiny_pair(work, target_layers=8)
    (work / "prompts.txt").write_text("hello there\nthe quick brown fox\nabc abc abc\n")
    models = ["--draft", draft, "--target", target, "--dtype", "float32"]
    for command in (["measure-acceptance", *models, "--data", work / "prompts.txt", "--greedy", "--width", "4",
                     "--continuation-tokens", "24", "--seed", "0", "--out", work / "acc.json"],
                    ["profile-hw", *models, "--max-tokens", "16", "--repeats", "1", "--warmup", "1",
                     "--context-length", "32", "--out", work / "profile.json"],
                    ["optimize", "--acceptance", work / "acc.json", "--profile", work / "profile.json",
                     "--method", "dynamic", "--out", work / "tree.json"]):
        done = sequoia(*command)
        assert done.returncode == 0, done.stderr
    return work, models


def level_widths_of(parents: list[int]) -> list[int]:
    layout = tree_layout(parents)
    return [b - a for a, b in zip(layout.level_starts[1:], layout.level_starts[2:])] or [1]


def test_optimize_plans_a_dynamic_tree_from_the_calibration_and_the_profile(planned):
    work, _ = planned
    tree = json.loads((work / "tree.json").read_text())
    section = tree["dynamic"]
    acceptance = json.loads((work / "acc.json").read_text())
    profile = json.loads((work / "profile.json").read_text())
    # The caps: the static pick of the same acceptance when only the target's time is paid, or the
    # static pick itself, whichever is predicted faster.
    target_only = optimize(acceptance, {**profile, "draft": None})
    assert section["widths"] in (level_widths_of(target_only["parents"]), level_widths_of(tree["parents"]))
    assert section["fallback"] == (section["prediction"]["ms_per_token"] >= tree["plan"]["ms_per_token"])
    assert section["calibration"] == acceptance["calibration"]
    assert section["token_ms"] == tree["plan"]["ms_per_token"]
    assert section["target_ms"] == profile["target"]["ms"] and section["draft_ms"] == profile["draft"]["ms"]


def test_dynamic_caps_exceed_the_static_pick_when_the_draft_is_costly():
    # A draft as slow as the target keeps the static pick small; the caps, priced by the target alone, are not.
    bins = len(CALIBRATION_EDGES) - 1
    acceptance = {"acceptance": [0.8, 0.1, 0.05, 0.02],
                  "calibration": calibration_from_counts(CALIBRATION_EDGES, [10] * bins, [5] * bins)}
    counts = range(1, 33)
    profile = {"target": {"ms": {str(n): 100.0 + n for n in counts}},
               "draft": {"ms": {str(n): 100.0 for n in counts}}}
    tree = optimize(acceptance, profile, max_depth=8, method="dynamic")
    static = level_widths_of(tree["parents"])
    caps = tree["dynamic"]["widths"]
    assert sum(caps) > sum(static) and len(caps) >= len(static)
    assert caps == level_widths_of(optimize(acceptance, {**profile, "draft": None}, max_depth=8)["parents"])


def test_decode_method_dynamic_greedy_drafts_and_gives_autoregressive_decodings_tokens(planned):
    work, models = planned
    outputs, errors = {}, {}
    for method in ("dynamic", "autoregressive"):
        tree = ["--tree", work / "tree.json"] if method == "dynamic" else []
        done = sequoia("decode", *models, *tree, "--method", method, "--data", work / "prompts.txt", "--greedy",
                       "--max-new-tokens", "20", "--out", work / f"{method}.jsonl", "--stats", work / f"{method}.json")
        assert done.returncode == 0, done.stderr
        lines = (work / f"{method}.jsonl").read_text().splitlines()
        outputs[method], errors[method] = [json.loads(line)["output_ids"] for line in lines], done.stderr
    assert outputs["dynamic"] == outputs["autoregressive"]
    stats = json.loads((work / "dynamic.json").read_text())
    assert stats["method"] == "dynamic" and stats["draft_forwards"] > 0
    assert stats["draft_forwards_per_step"] == stats["draft_forwards"] / stats["target_forwards"]
    assert stats["undrafted_share"] < 1 and "steps drafted nothing" in errors["dynamic"]
    # Where the plan predicts its grown trees no faster, the file's static tree runs, with one line saying so.
    fallback = json.loads((work / "tree.json").read_text())["dynamic"]["fallback"]
    assert ("decoding the static tree" in errors["dynamic"]) == fallback


def test_dynamic_without_its_plan_or_calibration_is_one_line(planned, tmp_path):
    work, models = planned
    old = json.loads((work / "acc.json").read_text())
    del old["calibration"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    done = sequoia("optimize", "--acceptance", tmp_path / "old.json", "--profile", work / "profile.json",
                   "--method", "dynamic", "--out", tmp_path / "tree.json")
    assert_one_line_error(done, "calibration", "--method")
    assert not (tmp_path / "tree.json").exists()
    done = sequoia("optimize", "--acceptance", tmp_path / "old.json", "--profile", work / "profile.json",
                   "--out", tmp_path / "static.json")
    assert done.returncode == 0, done.stderr  # static trees do without it
    done = sequoia("decode", *models, "--tree", tmp_path / "static.json", "--method", "dynamic", "--prompt", "hi",
                   "--greedy", "--stats", tmp_path / "stats.json")
    assert_one_line_error(done, "no dynamic plan", "--tree")
    assert not (tmp_path / "stats.json").exists()
    done = sequoia("optimize", "--acceptance", work / "acc.json", "--profile", work / "profile.json",
                   "--method", "bushy", "--out", tmp_path / "tree.json")
    assert_one_line_error(done, "method 'bushy'")
