"""decode on tiny random models (float32): tree forwards, greedy identity, caches, sampling."""

import json

import pytest
import torch
from scipy.stats import chisquare

from sequoia_cli.kv import causal, forward, new_cache
from sequoia_cli.layout import tree_layout
from sequoia_cli.sampling import Sampling
from sequoia_cli.tree import best_tree, chain_parents, tree_table
from tests.conftest import assert_one_line_error, sequoia
from tests.tiny import FAMILIES, TEST_DEVICE, decoder, noisy_copy, tiny_model

DP_TREE = best_tree(tree_table([0.5, 0.2, 0.1, 0.05], 24, 6), 24, 6)
TREES = {"single": [-1], "chain": chain_parents(5), "star": [-1] + [0] * 7, "dp": DP_TREE}


def prompt(length: int, seed: int, vocab: int = 97) -> list[int]:
    return torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


# Each engine with the host walk, and the static one with the device walk, on any test device:
# (engine, walk on the device).
ENGINES = {"eager": ("eager", False), "static": ("static", False), "static-device-walk": ("static", True)}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("engine", ["eager", "static"])
def test_tree_forward_equals_path_forward(family, engine):
    model = tiny_model(family, seed=1)
    prefix = prompt(9, 0)
    layout = tree_layout(DP_TREE, TEST_DEVICE)
    tokens = torch.tensor(prompt(layout.size, 1), device=TEST_DEVICE)
    with torch.inference_mode():
        cache = new_cache(model, engine, 8 + layout.size)
        # Stale entries past the sequence must not matter: fill the room first, then go back.
        forward(cache, torch.tensor(prompt(8 + layout.size, 2), device=TEST_DEVICE),
                torch.arange(8 + layout.size, device=TEST_DEVICE), causal(8 + layout.size, TEST_DEVICE), fixed=False)
        cache.length = 0
        if engine == "eager":
            cache = new_cache(model, engine, 0)
        forward(cache, torch.tensor(prefix[:-1], device=TEST_DEVICE), torch.arange(8, device=TEST_DEVICE),
                causal(8, TEST_DEVICE), fixed=False)
        # The root (last prefix token) then the tree, as decode feeds the target.
        tokens[0] = prefix[-1]
        logits = forward(cache, tokens, 8 + layout.depth_of, layout.ancestors)
        for node in range(layout.size):
            path, walk = [], node
            while walk > 0:
                path.insert(0, int(tokens[walk]))
                walk = layout.parents[walk]
            plain = model(input_ids=torch.tensor([prefix + path], device=TEST_DEVICE)).logits[0, -1]
            torch.testing.assert_close(logits[node], plain, atol=1e-4, rtol=1e-4)


def reference_greedy(model, ids: list[int], new: int, eos=None) -> list[int]:
    out = model.generate(torch.tensor([ids], device=TEST_DEVICE), do_sample=False, max_new_tokens=new,
                         eos_token_id=eos, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tree", [*TREES, "deep"])
@pytest.mark.parametrize("engine", ENGINES)
def test_greedy_is_token_identical_to_generate(family, tree, engine):
    target = tiny_model(family, seed=1)
    draft = noisy_copy(target, 0.5)
    parents = TREES.get(tree) or best_tree(tree_table([0.8, 0.3, 0.1], 40, 8), 40, 8)
    kind, on_device = ENGINES[engine]
    # Later prompts reuse the first one's caches, as a run's prompts do.
    decoding = decoder(target, draft, parents, Sampling(), 30, engine=kind, walk_on_device=on_device)
    for seed in range(3):
        ids = prompt(5 + 4 * seed, seed)
        result = decoding.generate(ids, torch.Generator(device=TEST_DEVICE))
        assert result.output_ids == reference_greedy(target, ids, 30)
        assert sum(result.accepted) == 30


def test_greedy_stops_at_eos_like_generate():
    target = tiny_model("qwen2", seed=1)
    ids = prompt(7, 3)
    free_run = reference_greedy(target, ids, 40)
    eos = free_run[17]  # a token the target emits mid-way
    expected = reference_greedy(target, ids, 40, eos=eos)
    assert expected[-1] == eos and len(expected) < 40
    result = decoder(target, noisy_copy(target, 0.3), DP_TREE, Sampling(), 40, eos_ids=frozenset({eos})).generate(
        ids, torch.Generator(device=TEST_DEVICE))
    assert result.output_ids == expected and result.stopped_by == "eos"


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
@pytest.mark.parametrize("engine", ENGINES)
def test_greedy_stops_at_the_end_of_the_context_like_generate(family, engine):
    """Near the end of a 48-token context the loop finishes with plain steps; it stops when the
    context is full, with the target's own greedy tokens."""
    target = tiny_model(family, seed=1, context=48)
    ids = prompt(30, 4)
    kind, on_device = ENGINES[engine]
    result = decoder(target, noisy_copy(target, 0.2), DP_TREE, Sampling(), 100, engine=kind,
                     walk_on_device=on_device).generate(ids, torch.Generator(device=TEST_DEVICE))
    assert result.stopped_by == "context"
    assert len(ids) + len(result.output_ids) == 48
    assert result.output_ids == reference_greedy(target, ids, 48 - len(ids))


def test_a_whole_chain_accepted_at_the_end_of_the_context_stops_there():
    """A step whose deepest node fits adds one token more than its depth: 29 + 3 * 5 leaves room
    for a chain of 4, whose 5 tokens would pass the 48-token context by one."""
    target = tiny_model("llama", seed=4, context=48)
    ids = prompt(29, 0)
    result = decoder(target, target, chain_parents(4), Sampling(), 100).generate(ids,
                                                                                 torch.Generator(device=TEST_DEVICE))
    assert result.accepted[:4] == [5, 5, 5, 4] and result.stopped_by == "context"
    assert result.output_ids == reference_greedy(target, ids, 48 - 29)


def test_draft_equal_to_target_accepts_whole_chains():
    target = tiny_model("llama", seed=4)
    result = decoder(target, target, chain_parents(4), Sampling(), 25).generate(prompt(6, 0),
                                                                                torch.Generator(device=TEST_DEVICE))
    assert result.accepted == [5, 5, 5, 5, 5]


@pytest.mark.parametrize("method", ["sequoia", "specinfer", "topk"])
@pytest.mark.parametrize("engine", ENGINES)
def test_caches_hold_exactly_the_accepted_tokens(method, engine):
    target = tiny_model("qwen2", seed=1)
    draft = noisy_copy(target, 0.3)
    ids = prompt(6, 5)
    sampling = Sampling(temperature=1.0, top_p=0.95, method=method)
    kind, on_device = ENGINES[engine]
    decoding = decoder(target, draft, DP_TREE, sampling, 60, engine=kind, walk_on_device=on_device)
    result = decoding.generate(ids, torch.Generator(device=TEST_DEVICE).manual_seed(0))
    text = ids + result.output_ids
    assert decoding.caches.target.length == len(text) - 1
    for model, cache in ((target, decoding.caches.target), (draft, decoding.caches.draft)):
        cached = cache.length
        rest = text[cached:]
        with torch.inference_mode():
            positions = cached + torch.arange(len(rest), device=TEST_DEVICE)
            logits = forward(cache, torch.tensor(rest, device=TEST_DEVICE), positions, causal(len(rest), TEST_DEVICE),
                             fixed=False)
            fresh = model(input_ids=torch.tensor([text], device=TEST_DEVICE)).logits[0, cached:]
        torch.testing.assert_close(logits, fresh, atol=1e-4, rtol=1e-4)


def exact_two_token_distribution(model, ids: list[int], temperature: float, top_p: float) -> torch.Tensor:
    from sequoia_cli.sampling import distribution

    with torch.inference_mode():
        first = distribution(model(input_ids=torch.tensor([ids], device=TEST_DEVICE)).logits[0, -1].double(),
                             temperature, top_p)
        vocab = len(first)
        batch = torch.tensor([ids + [x] for x in range(vocab)], device=TEST_DEVICE)
        second = distribution(model(input_ids=batch).logits[:, -1].double(), temperature, top_p)
    return (first[:, None] * second).flatten()


# Two levels are all that the first two tokens can use: a deeper tree only costs draft forwards.
TWO_LEVELS = best_tree(tree_table([0.5, 0.2, 0.1, 0.05], 10, 2), 10, 2)


# The device walk's other methods are verify_node row by row (tests/test_engine.py).
@pytest.mark.parametrize("method,parents,engine", [
    ("sequoia", TWO_LEVELS, "eager"), ("specinfer", TWO_LEVELS, "eager"), ("topk", TWO_LEVELS, "eager"),
    ("sequoia", chain_parents(2), "eager"), ("sequoia", TWO_LEVELS, "static-device-walk"),
    ("topk", TWO_LEVELS, "static-device-walk")])
def test_sampled_tokens_follow_the_target(method, parents, engine):
    target = tiny_model("qwen2", vocab=6, seed=2)
    assert_first_two_tokens_follow(target, noisy_copy(target, 0.6, seed=1), parents, method, engine=ENGINES[engine])


def assert_first_two_tokens_follow(target, draft, parents, method, runs: int = 1500, engine=("eager", False),
                                   growth=None):
    """Chi-square of the first two generated tokens over many seeds against the target's exact
    joint distribution (with `growth`, trees grown per step within `parents`)."""
    vocab = target.get_output_embeddings().weight.shape[0]
    ids, temperature, top_p = [1, 4, 2], 0.5, 0.9
    exact = exact_two_token_distribution(target, ids, temperature, top_p).cpu()  # counted on the host
    decoding = decoder(target, draft, parents, Sampling(temperature, top_p, method), 2, engine=engine[0],
                       walk_on_device=engine[1], growth=growth)
    counts = torch.zeros(vocab * vocab)
    generator = torch.Generator(device=TEST_DEVICE).manual_seed(11)
    for _ in range(runs):
        out = decoding.generate(ids, generator).output_ids
        counts[out[0] * vocab + out[1]] += 1
    assert counts[exact == 0].sum() == 0, "drew a pair the target cannot produce"
    expected = exact * runs
    big = expected >= 5  # pool rare pairs into one cell, as chi-square needs
    observed, predicted = counts[big].double(), expected[big]
    if expected[~big].sum() > 0:
        observed = torch.cat([observed, counts[~big].sum()[None].double()])
        predicted = torch.cat([predicted, expected[~big].sum()[None]])
    assert chisquare(observed.numpy(), predicted.numpy() * runs / predicted.sum().item()).pvalue > 1e-3


def test_decode_data_writes_one_line_per_prompt_and_is_repeatable(pair, tmp_path):
    draft, target = pair
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["abc", "hello", "xyz 123"]))
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"format": "sequoia-tree/1", "parents": DP_TREE, "size": len(DP_TREE),
                                "depth": max(tree_layout(DP_TREE).node_depths)}))
    runs = []
    for name in ("a", "b"):
        done = sequoia("decode", "--draft", draft, "--target", target, "--tree", str(tree), "--data", str(prompts),
                       "--temperature", "0.9", "--seed", "7", "--max-new-tokens", "12", "--dtype", "float32",
                       "--out", str(tmp_path / f"{name}.jsonl"), "--stats", str(tmp_path / f"{name}-stats.json"))
        assert done.returncode == 0, done.stderr
        runs.append([json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()])
    assert runs[0] == [{**r, "seconds": r0["seconds"], "prefill_seconds": r0["prefill_seconds"]}
                       for r, r0 in zip(runs[1], runs[0])]
    assert [r["prompt"] for r in runs[0]] == ["abc", "hello", "xyz 123"]
    for record in runs[0]:
        assert len(record["output_ids"]) == sum(record["accepted"]) and record["steps"] == len(record["accepted"])
    stats = json.loads((tmp_path / "a-stats.json").read_text())
    assert stats["tokens"] == sum(len(r["output_ids"]) for r in runs[0]) and stats["target_forwards"] > 0


def test_decode_prompt_streams_the_greedy_text(pair):
    draft, target = pair
    done = sequoia("decode", "--draft", draft, "--target", target, "--method", "chain", "--chain-length", "3",
                   "--prompt", "hello", "--greedy", "--max-new-tokens", "10", "--dtype", "float32",
                   "--no-chat-template")
    alone = sequoia("decode", "--target", target, "--method", "autoregressive", "--prompt", "hello", "--greedy",
                    "--max-new-tokens", "10", "--dtype", "float32", "--no-chat-template")
    assert done.returncode == 0 and alone.returncode == 0, done.stderr + alone.stderr
    assert done.stdout == alone.stdout and done.stdout.strip()


def test_decode_bad_inputs(pair, tmp_path):
    draft, target = pair
    other = tmp_path / "other"
    from tests.tiny import tiny_tokenizer

    odd = tiny_tokenizer()
    odd.add_tokens(["<extra>"])
    tiny_model("qwen2", vocab=len(odd)).save_pretrained(other)
    odd.save_pretrained(other)
    base = ["decode", "--target", target, "--dtype", "float32"]
    assert_one_line_error(sequoia(*base, "--draft", str(other), "--method", "chain", "--chain-length", "2",
                                  "--prompt", "hi"), "tokenizers differ")
    bad_tree = tmp_path / "bad.json"
    bad_tree.write_text(json.dumps({"format": "sequoia-tree/1", "parents": [-1, 2, 0], "size": 3, "depth": 1}))
    assert_one_line_error(sequoia(*base, "--draft", draft, "--tree", str(bad_tree), "--prompt", "hi"),
                          str(bad_tree), "topological")
    assert_one_line_error(sequoia(*base, "--method", "autoregressive", "--prompt", "x" * 400),
                          "past the models' context")
    assert_one_line_error(sequoia(*base, "--method", "autoregressive", "--prompt", "hi", "--max-new-tokens", "0"),
                          "--max-new-tokens")
    assert_one_line_error(sequoia(*base, "--draft", draft, "--prompt", "hi"), "--tree")
    assert_one_line_error(sequoia(*base, "--method", "autoregressive", "--prompt", "hi", "--temperature", "0"),
                          "--temperature")
    assert_one_line_error(sequoia(*base, "--method", "autoregressive"), "--prompt")
    missing = tmp_path / "nowhere" / "model"
    assert_one_line_error(sequoia("decode", "--target", str(missing), "--method", "autoregressive", "--prompt", "hi"),
                          "no such folder")
    out = tmp_path / "never.jsonl"
    assert_one_line_error(sequoia(*base, "--method", "autoregressive", "--data", str(tmp_path / "none.jsonl"),
                                  "--out", str(out)), "none.jsonl")
    assert not out.exists()


def test_a_model_that_ignores_the_tree_mask_is_refused():
    from sequoia_cli.errors import BadInput
    from sequoia_cli.kv import check_tree_attention

    model = tiny_model("llama", seed=5)
    check_tree_attention(model, "tiny llama")
    honest_forward = model.forward
    model.forward = lambda *args, attention_mask=None, **kwargs: honest_forward(*args, **kwargs)
    with pytest.raises(BadInput, match="does not honour a 4D attention mask"):
        check_tree_attention(model, "tiny llama")


@pytest.mark.parametrize("engine", ["eager", "static"])
def test_a_conversation_decodes_turn_by_turn_as_the_targets_own_greedy(pair, engine):
    """Each later turn reads the earlier turns and the model's own answers from the caches, and
    its greedy answer is the target's own `generate` on the same conversation's ids."""
    from sequoia_cli.stages.decode import decode_prompts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sequoia_cli.models import eos_ids, next_turn_ids

    draft_folder, target_folder = pair
    target = AutoModelForCausalLM.from_pretrained(target_folder, dtype=torch.float32).to(TEST_DEVICE)
    draft = AutoModelForCausalLM.from_pretrained(draft_folder, dtype=torch.float32).to(TEST_DEVICE)
    tokenizer = AutoTokenizer.from_pretrained(target_folder)
    turns = ["abc", "and then?", "once more"]
    first = tokenizer(turns[0])["input_ids"]
    stop = frozenset(eos_ids(target, tokenizer))
    decoding = decoder(target, draft, DP_TREE, Sampling(), 12, eos_ids=stop, engine=engine)
    records = list(decode_prompts(decoding, tokenizer, [turns], [first], 0, chat_template=False))
    assert [r["turn"] for r in records] == [1, 2, 3] and [r["prompt"] for r in records] == turns
    held, answers = [], []
    for turn, record in enumerate(records):
        ids = first if turn == 0 else next_turn_ids(tokenizer, turns, answers, held, False)
        assert record["prompt_tokens"] == len(ids)
        assert record["output_ids"] == reference_greedy(target, ids, 12, eos=tokenizer.eos_token_id)
        held, answers = ids + record["output_ids"], answers + [record["text"]]


def test_decode_turns_all_writes_a_line_per_turn(pair, tmp_path):
    draft, target = pair
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"turns": ["hi", "more"]}) + "\n" + json.dumps({"turns": ["solo"]}) + "\n")
    out = tmp_path / "out.jsonl"
    done = sequoia("decode", "--draft", draft, "--target", target, "--method", "chain", "--chain-length", "2",
                   "--data", data, "--prompt-field", "turns", "--turns", "all", "--greedy", "--max-new-tokens", "6",
                   "--dtype", "float32", "--out", out)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r.get("turn")) for r in lines] == [("hi", 1), ("more", 2), ("solo", None)]
    assert_one_line_error(sequoia("decode", "--target", target, "--method", "autoregressive", "--data", data,
                                  "--prompt-field", "turns", "--turns", "both", "--dtype", "float32"), "--turns")
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"turns": ["x" * 60] * 4}) + "\n")
    assert_one_line_error(sequoia("decode", "--target", target, "--method", "autoregressive", "--data", long,
                                  "--prompt-field", "turns", "--turns", "all", "--max-new-tokens", "60",
                                  "--dtype", "float32", "--out", tmp_path / "never.jsonl"), "conversation 1",
                          "--max-new-tokens")
    assert not (tmp_path / "never.jsonl").exists()
