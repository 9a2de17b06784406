"""Rows by level as decode meets them: the walk down measured ranks is decode's own, and build-tree
and optimize plan with the rows their tree meets."""

import numpy as np
import pytest
import torch
from sequoia_cli.stages.build_tree import build_tree
from sequoia_cli.stages.measure_acceptance import Request, measure_acceptance
from sequoia_cli.stages.optimize import optimize

from sequoia_cli.acceptance import (
    acceptance_from_counts,
    decode_steps,
    level_counts,
    plan_by_levels,
    replayed,
    rows_met,
)
from sequoia_cli.models import encode_prompt, eos_ids
from sequoia_cli.sampling import Sampling
from sequoia_cli.seeds import prompt_generator
from sequoia_cli.tree import best_tree, chain_parents, expected_tokens, tree_table
from tests.tiny import decoder, noisy_copy, tiny_model, tiny_tokenizer

TWO_LEVELS = best_tree(tree_table([0.5, 0.2, 0.1, 0.05], 10, 3), 10, 3)


def test_walk_by_hand():
    # A chain of 2: accept, accept (leaf: the target's token at position 2 ends the step), then
    # rank 2 (no such child), none, and rank 1 as the continuation ends.
    assert decode_steps([-1, 0, 1], [1, 1, 1, 2, 0, 1]) == [([1, 1], 2), ([2], 0), ([0], 0), ([1], 1)]
    assert level_counts([-1, 0, 1], [[1, 1, 1, 2, 0, 1]], 2) == [[1, 2, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    # A root with two children, the second with one: rank 2 then 1 is accepted twice.
    assert decode_steps([-1, 0, 0, 2], [2, 1, 5, 1]) == [([2, 1], 2), ([1], 1)]
    # Replayed: the steps starting at 0, 3 and 4 fit (start + depth 2 <= 6), the one at 5 does not.
    assert replayed([-1, 0, 1], [1, 1, 1, 2, 0, 1]) == (3 + 1 + 1, 3)
    assert replayed([-1], [1, 0, 2]) == (3, 3)


@pytest.mark.parametrize("parents", [TWO_LEVELS, chain_parents(3), [-1, 0, 0, 0]])
def test_the_walk_takes_the_steps_greedy_decode_takes(parents):
    # Greedy decode's path is the target's greedy continuation, and at each of its positions the
    # draft's children are its top-k: the walk down the measured ranks must add, step by step, the
    # tokens decode added (the last step may be cut by the token budget).
    tokenizer = tiny_tokenizer()
    target = tiny_model("qwen2", vocab=len(tokenizer), seed=5)
    draft = noisy_copy(target, 0.3, seed=6)
    tokens = 40
    request = Request([{"prompt": "abc"}, {"prompt": "hello"}], Sampling(), width=4, continuation_tokens=tokens,
                      seed=0, chat_template=False)
    measured = measure_acceptance(target, draft, tokenizer, request)
    checked = 0
    for index, text in enumerate(["abc", "hello"]):
        ids = encode_prompt(tokenizer, text, False)
        stop = frozenset(eos_ids(target, tokenizer))
        result = decoder(target, draft, parents, Sampling(), tokens, eos_ids=stop).generate(
            ids, prompt_generator(0, index, torch.device("cpu")))
        steps = [accepted + 1 for _, accepted in decode_steps(parents, measured["ranks"][str(index)])]
        assert len(steps) == len(result.accepted) and steps[:-1] == result.accepted[:-1]
        checked += len(steps) - 1
        tokens_replayed, steps_replayed = replayed(parents, measured["ranks"][str(index)])
        assert 0 < steps_replayed <= len(result.step_tokens)
        assert tokens_replayed == sum(result.step_tokens[:steps_replayed])
    assert checked > 10 and measured["acceptance"][0] < 1.0


def markov_ranks(positions: int, seed: int) -> list[int]:
    """Ranks 0..3 whose odds depend on the previous rank: rank 1 follows rank 1 far more often."""
    generator = np.random.default_rng(seed)
    ranks, previous = [], 0
    for _ in range(positions):
        odds = [0.03, 0.95, 0.01, 0.01] if previous == 1 else [0.4, 0.3, 0.2, 0.1]
        previous = int(generator.choice(4, p=odds))
        ranks.append(previous)
    return ranks


def markov_acceptance() -> dict:
    ranks = {str(i): markov_ranks(3000, i) for i in range(3)}
    counts = [[0] * 4]
    for row in ranks.values():
        for rank in row:
            counts[0][rank] += 1
    return acceptance_from_counts(counts, "greedy", 0.0, 1.0, 3, ranks=ranks)


def realized(parents: list[int], acceptance: dict) -> float:
    steps = [accepted + 1 for row in acceptance["ranks"].values() for _, accepted in decode_steps(parents, row)]
    return sum(steps) / len(steps)


def test_build_tree_plans_with_the_rows_its_tree_meets():
    acceptance = markov_acceptance()
    tree, _ = build_tree(acceptance, 12, 6)
    rows = rows_met(tree["parents"], acceptance)
    assert tree["planned_by"] == "level" and tree["acceptance_by_level"] == rows
    assert tree["expected_tokens"] == pytest.approx(expected_tokens(tree["parents"], rows), rel=1e-12)
    # Settled: the DP on the rows the tree meets gives the tree back.
    assert best_tree(tree_table(rows, 12, 6), 12, 6) == tree["parents"]
    # Those rows predict the walk's tokens per step within 5% (not exactly: they
    # take the ranks at different levels, and of siblings, as independent).
    assert abs(tree["expected_tokens"] / realized(tree["parents"], acceptance) - 1) < 0.05


def test_optimize_plans_with_the_rows_its_tree_meets():
    acceptance = markov_acceptance()
    profile = {"target": {"ms": {"1": 100.0, "4": 104.0, "8": 110.0, "16": 140.0}},
               "draft": {"ms": {"1": 10.0, "4": 11.0, "8": 13.0, "16": 18.0}}}
    tree = optimize(acceptance, profile)
    rows = rows_met(tree["parents"], acceptance)
    assert tree["acceptance_by_level"] == rows
    assert tree["expected_tokens"] == pytest.approx(expected_tokens(tree["parents"], rows), rel=1e-12)
    assert abs(tree["expected_tokens"] / realized(tree["parents"], acceptance) - 1) < 0.05
    positional = optimize(acceptance, profile, positional=True)
    assert positional["planned_by"] == "positional"
    assert positional["expected_tokens"] == pytest.approx(
        expected_tokens(positional["parents"], acceptance["acceptance"]), rel=1e-12)


def test_planning_that_goes_round_keeps_the_tree_its_own_rows_rate_best():
    acceptance = markov_acceptance()
    trees = [chain_parents(3), [-1, 0, 0, 1], [-1, 0, 0, 0]]
    plans = []

    def plan(rows):  # a planner that cycles through three trees, whatever the rows
        plans.append(rows)
        return (trees[len(plans) % 3],)

    (parents,), rows = plan_by_levels(acceptance, False, plan, expected_tokens)
    rated = {tuple(t): expected_tokens(t, rows_met(t, acceptance)) for t in trees}
    assert tuple(parents) == max(rated, key=rated.get) and rows == rows_met(parents, acceptance)
    assert len(plans) == 4  # the start, then each tree once until one came back
