"""The verifier's output distribution, computed exactly by enumerating every draw of children,
equals the target's distribution, for each method; a step's expected tokens are the mean of the
tokens its verification accepts."""

import itertools
import math

import pytest
import torch

from sequoia_cli.layout import tree_layout
from sequoia_cli.sampling import Sampling, distribution, draw_children, residual, verify_node, without
from sequoia_cli.verify import Drafted, expected_step_tokens, verify_host
from tests.tiny import TEST_DEVICE


def draws(q: torch.Tensor, width: int, method: str):
    """Every children sequence the method can draw from q, with its probability."""
    support = [int(x) for x in torch.nonzero(q > 0).flatten()]
    if method == "topk":
        tokens, real = draw_children(q[None], width, "topk", torch.Generator(device=q.device))
        yield tokens[0][real[0]].tolist(), 1.0
    elif method == "specinfer":
        for children in itertools.product(support, repeat=width):
            yield list(children), math.prod(float(q[x]) for x in children)
    else:  # without replacement: sequential draws, each from what is left
        for children in itertools.permutations(support, min(width, len(support))):
            chance, left = 1.0, 1.0
            for x in children:
                chance *= float(q[x]) / left
                left -= float(q[x])
            yield list(children), chance


def output_distribution(p: torch.Tensor, q: torch.Tensor, width: int, method: str) -> torch.Tensor:
    """Exact distribution of the token a node's verification outputs: an accepted child, or a
    draw from the residual when all are rejected."""
    out = torch.zeros_like(p)
    for children, chance in draws(q, width, method):
        # Uniforms of 1.0 reject every child, so verify_node reports every acceptance probability.
        _, rest, tried = verify_node(p, q, children, method, [1.0] * len(children))
        reach = chance
        for x, accept in zip(children, tried):
            out[x] += reach * accept
            reach *= 1.0 - accept
        out += reach * rest
    return out


def f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=TEST_DEVICE)


def random_distributions(seed: int, vocab: int, temperature: float, top_p: float):
    generator = torch.Generator(device=TEST_DEVICE).manual_seed(seed)
    target_logits = 2.0 * torch.randn(vocab, generator=generator, dtype=torch.float64, device=TEST_DEVICE)
    draft_logits = target_logits + 1.5 * torch.randn(vocab, generator=generator, dtype=torch.float64,
                                                     device=TEST_DEVICE)
    return distribution(target_logits, temperature, top_p), distribution(draft_logits, temperature, top_p)


@pytest.mark.parametrize("method", ["sequoia", "specinfer", "topk"])
@pytest.mark.parametrize("seed", range(6))
def test_output_is_target_distribution(method, seed):
    vocab, width = 5, 1 + seed % 3
    temperature = [0.3, 0.7, 1.0, 1.5][seed % 4]
    top_p = [1.0, 0.9, 0.6][seed % 3]
    p, q = random_distributions(seed, vocab, temperature, top_p)
    torch.testing.assert_close(output_distribution(p, q, width, method), p, atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", ["sequoia", "specinfer", "topk"])
def test_draft_without_mass_where_target_has_it(method):
    p = f64([0.4, 0.3, 0.2, 0.1, 0.0])
    q = f64([0.0, 0.0, 0.5, 0.25, 0.25])
    for width in (1, 2, 3, 4):
        torch.testing.assert_close(output_distribution(p, q, width, method), p, atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", ["sequoia", "specinfer", "topk"])
def test_disjoint_supports(method):
    p = f64([0.7, 0.3, 0.0, 0.0])
    q = f64([0.0, 0.0, 0.6, 0.4])
    for width in (1, 2, 3):
        torch.testing.assert_close(output_distribution(p, q, width, method), p, atol=1e-9, rtol=0)


def test_identical_distributions_accept_the_first_child():
    p = f64([0.5, 0.25, 0.25])
    chosen, _, tried = verify_node(p, p.clone(), [2, 0], "sequoia", [0.999, 0.999])
    assert chosen == 0 and tried == [1.0]


def test_without_replacement_never_repeats_and_respects_support():
    q = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0]], device=TEST_DEVICE)
    for seed in range(50):
        tokens, real = draw_children(q, 4, "sequoia", torch.Generator(device=TEST_DEVICE).manual_seed(seed))
        drawn = tokens[0][real[0]].tolist()
        assert sorted(drawn) == [0, 2, 3] and real[0].tolist() == [True, True, True, False]


def test_gumbel_top_k_first_two_draws_follow_sequential_sampling():
    q = torch.tensor([0.5, 0.3, 0.2], device=TEST_DEVICE)
    generator = torch.Generator(device=TEST_DEVICE).manual_seed(0)
    counts = {}
    runs = 20000
    tokens, _ = draw_children(q.expand(runs, 3).contiguous(), 2, "sequoia", generator)
    for first, second in tokens.tolist():
        counts[first, second] = counts.get((first, second), 0) + 1
    for (first, second), count in counts.items():
        exact = float(q[first] * q[second] / (1 - q[first]))
        assert abs(count / runs - exact) < 4 * math.sqrt(exact * (1 - exact) / runs)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    # On the host whatever the test device: top_p 0.5 sits exactly on the first token's mass, which the
    # host's float64 softmax gives exactly; a GPU's may round it an ulp either way.
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).log()
    expected = torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(distribution(logits, 1.0, 0.75), expected)
    torch.testing.assert_close(distribution(logits, 1.0, 0.5), torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64))


def test_residual_and_without():
    target = f64([0.5, 0.5, 0.0])
    proposal = f64([0.25, 0.0, 0.75])
    torch.testing.assert_close(residual(target, proposal), f64([1 / 3, 2 / 3, 0.0]))
    torch.testing.assert_close(without(proposal, 2), f64([1.0, 0.0, 0.0]))


def tree_step(method: str, temperature: float, top_p: float, seed: int):
    """A drafted tree (parents [-1, 0, 0, 0, 1, 1, 2]) with the target's logits at every node,
    as one decode step holds them."""
    generator = torch.Generator(device=TEST_DEVICE).manual_seed(seed)
    layout = tree_layout([-1, 0, 0, 0, 1, 1, 2], TEST_DEVICE)
    vocab = 6
    target_logits = 1.5 * torch.randn(layout.size, vocab, generator=generator, device=TEST_DEVICE)
    draft_logits = target_logits + torch.randn(layout.size, vocab, generator=generator, device=TEST_DEVICE)
    tokens = torch.zeros(layout.size, dtype=torch.long, device=TEST_DEVICE)
    alive = torch.ones(layout.size, dtype=torch.bool, device=TEST_DEVICE)
    # As the engine keeps them: a row for every node above the deepest level.
    proposals = distribution(draft_logits[: layout.level_starts[layout.depth]], temperature, top_p)
    for node, kids in enumerate(layout.children):
        if kids:
            drawn, real = draw_children(proposals[node][None], len(kids), method, generator)
            tokens[kids], alive[kids] = drawn[0], real[0] & alive[node]
    return target_logits, Drafted(layout, tokens, proposals, alive)


@pytest.mark.parametrize("method", ["sequoia", "specinfer", "topk"])
@pytest.mark.parametrize("seed", range(3))
def test_expected_tokens_is_the_mean_of_the_tokens_verification_accepts(method, seed):
    temperature, top_p = [(1.0, 1.0), (0.6, 0.9), (1.5, 1.0)][seed]
    logits, drafted = tree_step(method, temperature, top_p, seed)
    sampling = Sampling(temperature, top_p, method)
    expected = expected_step_tokens(logits, drafted, sampling)
    generator = torch.Generator(device=TEST_DEVICE).manual_seed(100 + seed)
    walks = [len(verify_host(logits, drafted, sampling, generator).path) + 1 for _ in range(4000)]
    mean, spread = sum(walks) / len(walks), torch.tensor(walks, dtype=torch.float64).std().item()
    assert 1.0 <= expected <= 4.0
    assert abs(mean - expected) < 4 * spread / math.sqrt(len(walks)) + 1e-9


def test_expected_tokens_in_greedy_mode_is_the_walk():
    target_logits, drafted = tree_step("sequoia", 1.0, 1.0, 0)
    drafted.tokens[1] = target_logits[0].argmax()  # the root's first child is the target's choice
    drafted.proposals = None
    walk = verify_host(target_logits, drafted, Sampling(), None).path
    assert walk[0] == 1 and expected_step_tokens(target_logits, drafted, Sampling()) == len(walk) + 1
