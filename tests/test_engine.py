"""The engines behind decode: the batched verification equals the node-by-node one, the device
walk reads the host once per step, an engine the device cannot serve is refused, a failed CUDA
graph capture falls back to uncaptured forwards."""

import itertools
import warnings

import pytest
import torch

from sequoia_cli.errors import BadInput
from sequoia_cli.kv import check_engine, engine_for
from sequoia_cli.layout import tree_layout
from sequoia_cli.sampling import Sampling, distribution, draw_children, verify_node
from sequoia_cli.tree import best_tree, chain_parents, tree_table
from sequoia_cli.verify import Drafted, expected_step_tokens, verify_device, verify_host, verify_rows
from tests.conftest import assert_one_line_error, sequoia
from tests.tiny import TEST_DEVICE, decoder, noisy_copy, tiny_model

DP_TREE = best_tree(tree_table([0.5, 0.2, 0.1, 0.05], 24, 6), 24, 6)


@pytest.mark.parametrize("method", ["sequoia", "specinfer", "topk"])
def test_batched_verification_is_verify_node_row_by_row(method):
    """Every node's verification at once gives each node what verify_node gives it: the accepted
    child, the acceptance probability of each child tried, the distribution left."""
    generator = torch.Generator().manual_seed(3)
    vocab, width = 7, 3
    rows = 40
    p = distribution(2.0 * torch.randn(rows, vocab, generator=generator, dtype=torch.float64), 0.8, 0.9)
    q = distribution(2.0 * torch.randn(rows, vocab, generator=generator, dtype=torch.float64), 0.8, 0.9)
    children, real = draw_children(q, width, method, generator)
    real[::5, 1:] = False  # some nodes with fewer children
    uniforms = torch.rand(rows, width, generator=generator, dtype=torch.float64)
    rank, rest, tried = verify_rows(p, q, children, real, method, uniforms)
    for row in range(rows):
        kids = [int(t) for t, r in zip(children[row], real[row]) if r]
        chosen, left, accepts = verify_node(p[row], q[row], kids, method, uniforms[row, : len(kids)].tolist())
        assert int(rank[row]) == (-1 if chosen is None else chosen)
        torch.testing.assert_close(tried[row, : len(accepts)], torch.tensor(accepts, dtype=torch.float64))
        torch.testing.assert_close(rest[row], left)


def drafted_step(method: str, temperature: float, seed: int, greedy_match: bool = False):
    """A drafted tree with the target's logits at every node, as a step holds them."""
    generator = torch.Generator().manual_seed(seed)
    layout = tree_layout([-1, 0, 0, 0, 1, 1, 2, 4, 4])
    vocab = 6
    target_logits = 1.5 * torch.randn(layout.size, vocab, generator=generator)
    draft_logits = target_logits + torch.randn(layout.size, vocab, generator=generator)
    tokens = torch.zeros(layout.size, dtype=torch.long)
    alive = torch.ones(layout.size, dtype=torch.bool)
    proposals = distribution(draft_logits[: layout.level_starts[layout.depth]], temperature, 1.0)
    for node, kids in enumerate(layout.children):
        if kids:
            drawn, real = draw_children(proposals[node][None], len(kids), method, generator)
            tokens[kids], alive[kids] = drawn[0], real[0] & alive[node]
    if greedy_match:  # the target agrees along the first children: the walk goes deep
        alive[:] = True
        for node in (1, 4, 7):
            siblings = layout.children[layout.parents[node]]
            best = target_logits[layout.parents[node]].argmax()
            # Greedy siblings are distinct tokens (the draft's top-k): swap the best in, keep them distinct.
            holder = next((k for k in siblings if tokens[k] == best), None)
            if holder is not None:
                tokens[holder] = tokens[node]
            tokens[node] = best
    return target_logits, Drafted(layout, tokens, proposals, alive)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_device_walk_is_the_host_walk(seed):
    logits, drafted = drafted_step("topk", 1.0, seed, greedy_match=seed % 2 == 0)
    drafted.proposals = None
    device = verify_device(logits, drafted, Sampling(), None)
    assert device == verify_host(logits, drafted, Sampling(), None)
    assert seed % 2 or len(device.path) == 3


@pytest.mark.parametrize("method", ["sequoia", "specinfer", "topk"])
def test_sampled_device_walk_accepts_what_verification_expects(method):
    logits, drafted = drafted_step(method, 0.7, 5)
    sampling = Sampling(0.7, 1.0, method)
    expected = expected_step_tokens(logits, drafted, sampling)
    generator = torch.Generator().manual_seed(9)
    walks = torch.tensor([len(verify_device(logits, drafted, sampling, generator).path) + 1.0 for _ in range(3000)])
    assert abs(walks.mean() - expected) < 4 * walks.std() / len(walks) ** 0.5 + 1e-9


def count_host_reads(monkeypatch) -> list:
    """Record every read of a tensor's values into Python (each one a sync on a GPU)."""
    reads = []
    for name in ("tolist", "item", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def warmed_decode(engine: str, temperature: float):
    """A decode call with the device walk, to run after a first one that made the caches (and
    captured the forwards): call it to decode 24 tokens."""
    target = tiny_model("qwen2", seed=1)
    draft = noisy_copy(target, 0.3)
    ids = list(range(3, 12))
    sampling = Sampling(temperature, 1.0, "sequoia")
    generator = torch.Generator(device=TEST_DEVICE).manual_seed(0)
    warm = decoder(target, draft, DP_TREE, sampling, 8, engine=engine, walk_on_device=True)
    warm.generate(ids, generator)
    decoding = decoder(target, draft, DP_TREE, sampling, 24, engine=engine, walk_on_device=True)
    decoding.caches = warm.caches
    return lambda: decoding.generate(ids, generator)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_static_step_with_the_device_walk_reads_the_host_once(monkeypatch, temperature):
    decode = warmed_decode("static", temperature)
    reads = count_host_reads(monkeypatch)
    result = decode()
    assert reads == ["tolist"] * len(result.accepted)


def test_an_engine_the_device_or_placement_cannot_serve_is_refused():
    cpu = torch.device("cpu")
    with pytest.raises(BadInput, match="cuda-graphs needs a CUDA device"):
        check_engine("cuda-graphs", cpu, placed=False)
    with pytest.raises(BadInput, match="placed or offloaded target"):
        check_engine("static", cpu, placed=True)
    with pytest.raises(BadInput, match="not one of"):
        check_engine("fast", cpu, placed=False)
    assert engine_for("auto", cpu, placed=False) == engine_for("auto", cpu, placed=True) == "eager"
    assert engine_for("auto", torch.device("cuda"), placed=False) == "cuda-graphs"
    assert engine_for("auto", torch.device("cuda"), placed=True) == "eager"


def test_the_cli_refuses_an_engine_in_one_line(pair):
    draft, target = pair
    base = ["decode", "--draft", draft, "--target", target, "--method", "chain", "--chain-length", "2",
            "--prompt", "hi", "--dtype", "float32"]
    assert_one_line_error(sequoia(*base, "--engine", "cuda-graphs"), "--engine", "CUDA")
    assert_one_line_error(sequoia(*base, "--engine", "warp"), "--engine", "warp")
    assert_one_line_error(sequoia(*base, "--engine", "static", "--max-memory", "cpu=1GiB"), "--engine", "eager")


@pytest.mark.skipif(TEST_DEVICE.type == "cuda", reason="on CUDA the capture succeeds")
def test_a_failed_capture_warns_and_the_forwards_run_uncaptured():
    """Where CUDA graphs cannot be captured (here: no CUDA), each forward shape warns once and the
    decode stays the target's own."""
    target = tiny_model("llama", seed=2)
    draft = noisy_copy(target, 0.3)
    ids = list(range(5, 14))
    reference = decoder(target, draft, chain_parents(3), Sampling(), 20).generate(ids, torch.Generator())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphs = decoder(target, draft, chain_parents(3), Sampling(), 20, engine="cuda-graphs")
        again = graphs.generate(ids, torch.Generator())
    assert again.output_ids == reference.output_ids
    caches = (graphs.caches.target, graphs.caches.draft)
    shapes = {(count, rows) for cache in caches for count, rows in cache.replays}
    failures = [w for w in caught if "CUDA graph capture failed" in str(w.message)]
    assert 1 <= len(failures) <= len(shapes)


@pytest.mark.skipif(TEST_DEVICE.type != "cuda", reason="counts GPU synchronizations")
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_captured_step_synchronizes_once(temperature):
    """On CUDA, a step of the cuda-graphs engine waits for the GPU once: when its result is read."""
    decode = warmed_decode("cuda-graphs", temperature)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = decode()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    # One read per step, and the end-of-prompt clock reads (prefill and the end of the call).
    assert len(syncs) <= len(result.accepted) + 2, [str(w.message) for w in syncs[:5]]


def test_every_engine_decodes_the_same_greedy_tokens_through_the_cli(pair, tmp_path):
    draft, target = pair
    outputs = []
    for engine in ("eager", "static", "auto"):
        done = sequoia("decode", "--draft", draft, "--target", target, "--method", "chain", "--chain-length", "3",
                       "--prompt", "hello", "--greedy", "--max-new-tokens", "12", "--dtype", "float32",
                       "--no-chat-template", "--engine", engine, "--stats", str(tmp_path / f"{engine}.json"))
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].strip()
    assert [json_engine(tmp_path / f"{e}.json") for e in ("eager", "static", "auto")] == ["eager", "static", "eager"]


def json_engine(path) -> str:
    import json

    return json.loads(path.read_text())["engine"]


def test_level_index_tensors_place_each_child_under_its_parent():
    layout = tree_layout(DP_TREE)
    for level, (rows, ranks) in enumerate(zip(layout.parent_rows, layout.child_ranks), start=1):
        nodes = range(layout.level_starts[level], layout.level_starts[level + 1])
        for node, row, rank in zip(nodes, rows.tolist(), ranks.tolist()):
            parent = layout.parents[node]
            assert parent == layout.level_starts[level - 1] + row
            assert layout.children[parent][rank] == node
    for node, kids in enumerate(layout.children):
        assert layout.child_table[node][layout.child_real[node]].tolist() == kids
    assert list(itertools.accumulate(len(k) for k in layout.children))[-1] == layout.size - 1


def test_decode_warns_when_the_tree_was_planned_for_another_engine():
    from sequoia_cli.stages.decode import setup_mismatches

    setups = {"draft": {"quantize": "none", "vocab": None}, "target": {"quantize": "none", "vocab": None}}
    tree = {"parents": [-1, 0], "plan": {"engine": "eager"}}
    assert setup_mismatches(tree, setups, "eager") == []
    assert setup_mismatches(tree, setups, "static") == [
        "the tree was planned from a profile of the eager engine; this run's engine is static"]
    assert setup_mismatches({"parents": [-1, 0], "plan": {}}, setups, "static") == []


@pytest.mark.parametrize("engine", ["eager", "static"])
def test_extending_a_sequence_reads_only_its_new_tokens(monkeypatch, engine):
    """A conversation's next turn keeps the caches' entries for the tokens it shares with the last
    call's sequence; without `extend` every prompt is read whole."""
    import sequoia_cli.decoder as decoder_module

    target = tiny_model("qwen2", seed=1)
    draft = noisy_copy(target, 0.3)
    first_decoder = decoder(target, draft, DP_TREE, Sampling(), 10, engine=engine)
    first = first_decoder.generate(list(range(3, 12)), torch.Generator())
    read = []
    original = decoder_module.forward

    def counted(cache, tokens, *args, fixed=True, **kwargs):
        if not fixed:
            read.append(len(tokens))
        return original(cache, tokens, *args, fixed=fixed, **kwargs)

    monkeypatch.setattr(decoder_module, "forward", counted)
    longer = first.tokens + [20, 21, 22]
    held = [first_decoder.caches.target.length, first_decoder.caches.draft.length]
    caches = first_decoder.caches
    extending = decoder(target, draft, DP_TREE, Sampling(), 5, engine=engine)
    extending.caches = caches
    extending.generate(longer, torch.Generator(), extend=True)
    # Target and draft each read what their caches lacked of the prompt but its last token.
    assert read == [len(longer) - 1 - length for length in held]
    assert all(count <= 3 + 1 + extending.layout.depth for count in read)
    read.clear()
    extending.generate(longer, torch.Generator())
    assert read == [len(longer) - 1] * 2


def test_a_plain_sampled_step_on_the_device_draws_from_the_target():
    """A step with nothing drafted (autoregressive decoding, the last steps before the context
    fills) draws its token from the target's distribution."""
    from scipy.stats import chisquare

    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 0.0, 1.5]])
    layout, sampling = tree_layout([-1]), Sampling(0.8, 0.9, "sequoia")
    exact = distribution(logits[0], 0.8, 0.9)
    generator = torch.Generator().manual_seed(4)
    plain = Drafted(layout, torch.tensor([0]), None, torch.ones(1, dtype=torch.bool))
    draws = [verify_device(logits, plain, sampling, generator) for _ in range(3000)]
    assert all(draw.path == [] and len(draw.tokens) == 1 for draw in draws)
    counts = torch.bincount(torch.tensor([draw.tokens[0] for draw in draws]), minlength=6).double()
    assert counts[exact == 0].sum() == 0
    kept = exact > 0
    assert chisquare(counts[kept].numpy(), (exact[kept] / exact[kept].sum() * 3000).double().numpy()).pvalue > 1e-3


def test_sampled_autoregressive_decoding_runs_with_the_device_walk():
    target = tiny_model("qwen2", seed=1)
    result = decoder(target, None, [-1], Sampling(1.0, 0.95), 12, engine="static", walk_on_device=True).generate(
        list(range(3, 9)), torch.Generator(device=TEST_DEVICE).manual_seed(1))
    assert len(result.output_ids) == 12 and result.accepted == [1] * 12
