"""measure-acceptance and profile-hw on tiny models, and the model-pair errors of the CLI."""

import json

import pytest
import torch

from sequoia_cli.artifacts import check_acceptance, check_profile
from sequoia_cli.engine import Sampling
from stages.measure_acceptance import accepted_ranks, measure_acceptance, run_lengths
from stages.profile_hw import token_counts
from tests.conftest import assert_one_line_error, sequoia
from tests.test_verifier import draws
from tests.tiny import tiny_model, tiny_tokenizer


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(0.8, 0.9), Sampling(1.3, 1.0)])
def test_draft_equal_to_target_always_accepts_the_first_child(sampling):
    tokenizer = tiny_tokenizer()
    model = tiny_model("qwen2", vocab=len(tokenizer), seed=3)
    records = [{"prompt": "abc"}, {"prompt": "hello world"}]
    result = measure_acceptance(model, model, tokenizer, records, sampling, width=4, continuation_tokens=12, seed=0)
    assert result["acceptance"][0] == 1.0 and result["rejected_all"] == 0.0 and 0 < result["samples"] <= 24
    check_acceptance("measured", result)


def test_toy_distributions_give_the_hand_computed_vector():
    """Same logits at every position: a_k is known exactly (enumerated over the draws)."""
    from sequoia_cli.sampling import verify_node

    p = torch.tensor([0.5, 0.3, 0.2, 0.0])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    width, positions = 3, 20000
    exact = torch.zeros(width + 1, dtype=torch.float64)  # [none, rank 1, rank 2, rank 3]
    for children, chance in draws(q.double(), width, "sequoia"):
        _, _, tried = verify_node(p.double(), q.double(), children, "sequoia", [1.0] * len(children))
        reach = chance
        for rank, accept in enumerate(tried, start=1):
            exact[rank] += reach * accept
            reach *= 1 - accept
        exact[0] += reach
    ranks = accepted_ranks(p.log().expand(positions, 4), q.log().expand(positions, 4), Sampling(1.0, 1.0), width,
                           torch.Generator().manual_seed(0))
    measured = torch.bincount(torch.tensor(ranks), minlength=width + 1).double() / positions
    stderr = (exact * (1 - exact) / positions).sqrt()
    assert ((measured - exact).abs() <= 4 * stderr + 1e-12).all(), (measured, exact)


def test_greedy_rank_is_the_targets_argmax_among_the_drafts_top_k():
    target = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]])
    draft = torch.tensor([[0.0, 2.0, 3.0, 1.0], [0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    assert accepted_ranks(target, draft, Sampling(), 2, torch.Generator()) == [2, 0, 0]


def test_run_lengths_count_accepted_positions_before_each():
    assert run_lengths([1, 2, 0, 1, 1, 1]) == [1, 2, 3, 1, 2, 3]


def test_token_counts():
    assert token_counts(5) == [1, 2, 3, 4, 5]
    assert token_counts(64) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64]
    assert token_counts(100) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 100]


def test_measure_and_profile_commands_chain_into_optimize_and_decode(pair, tmp_path):
    draft, target = pair
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\nthe quick brown fox\n")
    acc, profile, tree = tmp_path / "acc.json", tmp_path / "profile.json", tmp_path / "tree.json"
    models = ["--draft", draft, "--target", target, "--dtype", "float32"]
    done = sequoia("measure-acceptance", *models, "--data", str(prompts), "--temperature", "0.7", "--width", "4",
                   "--continuation-tokens", "10", "--out", str(acc))
    assert done.returncode == 0, done.stderr
    vector = check_acceptance(str(acc), json.loads(acc.read_text()))
    assert 0 < vector["samples"] <= 20 and len(vector["acceptance"]) == 4 and vector["mode"] == "stochastic"
    assert sum(vector["samples_by_depth"]) == vector["samples"]
    done = sequoia("profile-hw", *models, "--max-tokens", "16", "--context-length", "32", "--repeats", "2",
                   "--out", str(profile))
    assert done.returncode == 0, done.stderr
    timing = check_profile(str(profile), json.loads(profile.read_text()))
    for role in ("target", "draft"):
        assert [int(n) for n in timing[role]["ms"]] == token_counts(16)
        assert all(ms > 0 for ms in timing[role]["ms"].values())
    done = sequoia("optimize", "--acceptance", str(acc), "--profile", str(profile), "--out", str(tree))
    assert done.returncode == 0, done.stderr
    done = sequoia("decode", *models, "--tree", str(tree), "--prompt", "hi", "--max-new-tokens", "8", "--seed", "1")
    assert done.returncode == 0 and "temperature 0.7" in done.stderr, done.stderr
    assert "warning" not in done.stdout + done.stderr


def test_each_artifact_records_the_setup_it_was_measured_with_and_decode_warns_of_another(pair, tmp_path):
    draft, target = pair
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    acc, profile, tree = tmp_path / "acc.json", tmp_path / "profile.json", tmp_path / "tree.json"
    models = ["--draft", draft, "--target", target, "--dtype", "float32"]
    cheap = ["--draft-quantize", "int8", "--draft-vocab", "64"]
    assert sequoia("measure-acceptance", *models, *cheap, "--data", str(prompts), "--greedy", "--width", "2",
                   "--continuation-tokens", "6", "--out", str(acc)).returncode == 0
    assert sequoia("profile-hw", *models, *cheap, "--max-tokens", "4", "--context-length", "8", "--repeats", "1",
                   "--out", str(profile)).returncode == 0
    assert sequoia("optimize", "--acceptance", str(acc), "--profile", str(profile), "--out", str(tree)).returncode == 0
    setup, plain = {"quantize": "int8", "vocab": 64}, {"quantize": "none", "vocab": None}
    vector, timing, planned = (json.loads(path.read_text()) for path in (acc, profile, tree))
    assert vector["draft_setup"] == setup and vector["target_setup"] == plain
    assert timing["draft"]["setup"] == setup and timing["target"]["setup"] == plain
    assert planned["source"]["draft_setup"] == setup and planned["plan"]["draft_setup"] == setup
    run = ["decode", *models, "--tree", str(tree), "--prompt", "hi", "--max-new-tokens", "4"]
    same, other = sequoia(*run, *cheap), sequoia(*run)
    assert same.returncode == 0 and other.returncode == 0, same.stderr + other.stderr
    assert "warning" not in same.stdout + same.stderr
    warnings = [line for line in (other.stdout + other.stderr).splitlines() if line.startswith("warning")]
    assert len(warnings) == 2 and all("quantize int8, vocabulary 64" in line for line in warnings)


def test_pair_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQUOIA_CACHE", str(tmp_path / "empty-cache"))
    assert_one_line_error(sequoia("decode", "--pair", "no-such-pair", "--method", "chain", "--chain-length", "2",
                                  "--prompt", "hi"), "unknown model pair 'no-such-pair'")
    assert_one_line_error(sequoia("decode", "--pair", "qwen2.5-coder", "--method", "autoregressive", "--prompt", "hi"),
                          "not fetched yet")
    assert_one_line_error(sequoia("fetch-models", "no-such-pair"), "unknown model pair")
    corrupt = tmp_path / "empty-cache" / "models" / "qwen2.5-coder" / "target"
    corrupt.mkdir(parents=True)
    (corrupt / "config.json").write_text("{}")
    assert_one_line_error(sequoia("profile-hw", "--target", "qwen2.5-coder", "--out", str(tmp_path / "p.json")),
                          "corrupt cache")
    assert not (tmp_path / "p.json").exists()


def test_profile_and_measure_bad_inputs(pair, tmp_path):
    draft, target = pair
    out = tmp_path / "out.json"
    assert_one_line_error(sequoia("profile-hw", "--target", target, "--max-tokens", "0", "--out", str(out)), "--max-tokens")
    assert_one_line_error(sequoia("profile-hw", "--target", target, "--max-tokens", "64", "--context-length", "250",
                                  "--out", str(out)), "context")
    assert_one_line_error(sequoia("measure-acceptance", "--draft", draft, "--target", target, "--data", "mt-bench",
                                  "--width", "0", "--out", str(out)), "--width")
    assert_one_line_error(sequoia("measure-acceptance", "--draft", draft, "--target", target, "--data",
                                  str(tmp_path / "none.jsonl"), "--out", str(out)), "none.jsonl")
    assert not out.exists()
