"""measure-acceptance and profile-hw on tiny models, and the model-pair errors of the CLI."""

import json
import os

import pytest
import torch
from sequoia_cli.stages.measure_acceptance import LEVELS, Request, measure_acceptance, run_lengths, verify_positions
from sequoia_cli.stages.merge_acceptance import merge_acceptance
from sequoia_cli.stages.profile_hw import token_counts

from sequoia_cli.acceptance import calibration_from_counts
from sequoia_cli.artifacts import check_acceptance, check_profile
from sequoia_cli.errors import BadInput
from sequoia_cli.sampling import Sampling
from tests.conftest import assert_one_line_error, sequoia
from tests.test_verifier import draws
from tests.tiny import tiny_model, tiny_tokenizer


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(0.8, 0.9), Sampling(1.3, 1.0)])
def test_draft_equal_to_target_always_accepts_the_first_child(sampling):
    tokenizer = tiny_tokenizer()
    model = tiny_model("qwen2", vocab=len(tokenizer), seed=3)
    records = [{"prompt": "abc"}, {"prompt": "hello world"}]
    result = measure_acceptance(model, model, tokenizer, Request(records, sampling, 4, 12, seed=0))
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
    ranks = verify_positions(p.log().expand(positions, 4), q.log().expand(positions, 4), Sampling(1.0, 1.0), width,
                             torch.Generator().manual_seed(0)).ranks
    measured = torch.bincount(torch.tensor(ranks), minlength=width + 1).double() / positions
    stderr = (exact * (1 - exact) / positions).sqrt()
    assert ((measured - exact).abs() <= 4 * stderr + 1e-12).all(), (measured, exact)


def test_greedy_rank_is_the_targets_argmax_among_the_drafts_top_k():
    target = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]])
    draft = torch.tensor([[0.0, 2.0, 3.0, 1.0], [0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    assert verify_positions(target, draft, Sampling(), 2, torch.Generator()).ranks == [2, 0, 0]


def test_run_lengths_count_accepted_positions_before_each():
    assert run_lengths([1, 2, 0, 1, 1, 1]) == [1, 2, 3, 1, 2, 3]
    assert run_lengths([1] * 7) == [1, 2, 3, 4, 4, 4, 4][:7] and LEVELS == 4


def test_rows_by_level_are_the_counts_of_each_level():
    tokenizer = tiny_tokenizer()
    target, draft = tiny_model("qwen2", vocab=len(tokenizer), seed=3), tiny_model("qwen2", vocab=len(tokenizer), seed=4)
    records = [{"prompt": "abc"}, {"prompt": "hello world"}, {"prompt": "zz"}]
    vector = measure_acceptance(target, draft, tokenizer, Request(records, Sampling(0.9, 1.0), 3, 16, seed=1))
    check_acceptance("measured", vector)
    counts = vector["counts"]
    assert len(counts) == LEVELS and all(len(row) == 4 for row in counts)
    assert [sum(row) for row in counts if sum(row)] == vector["samples_by_level"]
    total = [sum(column) for column in zip(*counts)]
    pooled = [c / sum(total) for c in total[1:]]
    assert vector["acceptance"] == pytest.approx(pooled)
    for row, acceptance, stderr in zip(counts, vector["acceptance_by_level"], vector["stderr_by_level"]):
        # A row: its counts plus 16 positions spread as the whole vector.
        assert acceptance == pytest.approx([(c + 16 * a) / (sum(row) + 16) for c, a in zip(row[1:], pooled)])
        assert stderr == pytest.approx([(c / sum(row) * (1 - c / sum(row)) / sum(row)) ** 0.5 for c in row[1:]])


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(0.8, 0.9)], ids=["greedy", "sampled"])
def test_merged_shards_equal_the_whole_measurement(sampling):
    tokenizer = tiny_tokenizer()
    target, draft = tiny_model("qwen2", vocab=len(tokenizer), seed=3), tiny_model("qwen2", vocab=len(tokenizer), seed=4)
    records = [{"prompt": text} for text in ("abc", "hello world", "zz", "the fox", "a b c d", "q")]
    run = {"draft": "d", "target": "t", "dataset": "x"}
    whole = measure_acceptance(target, draft, tokenizer, Request(records, sampling, 3, 10, seed=5), run=run)
    shards = [(f"s{i}.json", measure_acceptance(target, draft, tokenizer,
                                                Request(records, sampling, 3, 10, seed=5, shard=(i, 4)), run=run))
              for i in (2, 0, 3, 1)]
    assert [s["prompts"] for _, s in shards] == [1, 2, 1, 2] and shards[3][1]["shard"] == "1/4"
    assert merge_acceptance(shards) == whole


def test_a_level_seen_a_few_times_stays_near_the_whole_vector():
    from sequoia_cli.acceptance import acceptance_from_counts

    # Level 1: 4 positions, all accepted at rank 2; level 2: 400 positions, 90% at rank 1.
    vector = acceptance_from_counts([[0, 0, 4], [40, 360, 0]], "greedy", 0.0, 1.0, 2)
    assert vector["acceptance"] == pytest.approx([360 / 404, 4 / 404])
    first, deep = vector["acceptance_by_level"]
    assert first[0] > 0.6 and first[1] < 0.3  # not the raw [0, 1]
    assert deep == pytest.approx([0.9, 0.0], abs=0.01)
    assert vector["samples_by_level"] == [4, 400]


def test_merging_refuses_shards_of_different_measurements():
    base = {"format": "sequoia-acceptance/1", "mode": "greedy", "temperature": 0.0, "top_p": 1.0, "width": 2,
            "acceptance": [0.5, 0.25], "rejected_all": 0.25, "samples": 4, "counts": [[1, 2, 1]], "draft": "d",
            "target": "t", "draft_setup": {"quantize": "none", "vocab": None}, "shard": "0/2"}
    other = {**base, "shard": "1/2"}
    assert merge_acceptance([("a", base), ("b", other)])["samples"] == 8
    for change, word in (({"draft": "e"}, "draft"), ({"width": 3, "counts": [[1, 2, 1, 0]]}, "width"),
                         ({"mode": "stochastic"}, "mode"), ({"temperature": 0.6}, "temperature"),
                         ({"draft_setup": {"quantize": "int4", "vocab": None}}, "draft_setup")):
        with pytest.raises(BadInput, match=f"b: '{word}'"):
            merge_acceptance([("a", base), ("b", {**other, **change})])
    with pytest.raises(BadInput, match="shard 0/2 again"):
        merge_acceptance([("a", base), ("b", dict(base))])
    with pytest.raises(BadInput, match="no 'counts'"):
        merge_acceptance([("a", base), ("b", {k: v for k, v in other.items() if k != "counts"})])


def measured_shard(part: str | None, counts=((1, 2, 1),), **fields) -> dict:
    """An acceptance artifact as measure-acceptance writes one, of shard `part` (None: a whole
    measurement), with `fields` changed."""
    from sequoia_cli.acceptance import acceptance_from_counts

    artifact = acceptance_from_counts([list(row) for row in counts], "greedy", 0.0, 1.0, 2, prompts=1, draft="d",
                                      target="t", draft_setup={"quantize": "none", "vocab": None},
                                      **({"shard": part} if part else {}))
    return {**artifact, **fields}


MERGE_FAULTS = {
    # name: ([the inputs], words the error must contain)
    "the same whole file twice": ([measured_shard(None)] * 2, ["no 'shard'"]),
    "two whole measurements": ([measured_shard(None), measured_shard(None, ((3, 1, 0),))], ["no 'shard'"]),
    "a whole measurement and a shard": ([measured_shard("0/2"), measured_shard(None)], ["no 'shard'"]),
    "the same shard twice": ([measured_shard("0/2"), measured_shard("0/2")], ["shard 0/2 again"]),
    "shards of different counts": ([measured_shard("0/2"), measured_shard("1/3")], ["shard of 3", "of 2"]),
    "a missing shard": ([measured_shard("0/3"), measured_shard("2/3")], ["shard 1/3 is missing"]),
    "a shard alone": ([measured_shard("1/2")], ["shard 0/2 is missing"]),
    "counts wider than width": ([measured_shard("0/2"), {**measured_shard("1/2"), "counts": [[1, 2, 1, 0]]}],
                                ["counts"]),
    "counts narrower than width": ([{**measured_shard("0/2"), "counts": [[1, 2]]}, measured_shard("1/2")], ["counts"]),
    "a shard given as a list": ([measured_shard("0/2"), measured_shard("1/2", shard=[1, 2])], ["shard"]),
    "prompts given as a string": ([measured_shard("0/2"), measured_shard("1/2", prompts="one")], ["prompts"]),
    "a shard without its calibration": ([measured_shard("0/2", calibration=calibration_from_counts(
        [0.0, 0.5, 1.0], [4, 3], [1, 2])), measured_shard("1/2")], ["no 'calibration' but", "has calibration edges"]),
    "a setup given as a string": ([measured_shard(part, draft_setup="none") for part in ("0/2", "1/2")],
                                  ["draft_setup"]),
}


@pytest.mark.parametrize("name", MERGE_FAULTS)
def test_merge_command_refuses_what_is_not_one_whole_measurement(name, tmp_path):
    inputs, words = MERGE_FAULTS[name]
    paths = []
    for i, artifact in enumerate(inputs):
        paths.append(tmp_path / f"acc-{i}.json")
        paths[-1].write_text(json.dumps(artifact), encoding="utf-8")
    out = tmp_path / "merged.json"
    # The same file twice is that one path given twice.
    given = [paths[0], paths[0]] if name == "the same whole file twice" else paths
    assert_one_line_error(sequoia("merge-acceptance", *given, "--out", out), *words)
    assert not out.exists() and sorted(os.listdir(tmp_path)) == sorted(path.name for path in paths)


@pytest.mark.parametrize("name", [name for name in MERGE_FAULTS if name != "prompts given as a string"])
def test_merge_refuses_before_computing_anything(name):
    """merge_acceptance itself refuses (its reader aside): nothing is merged from a bad set."""
    inputs, words = MERGE_FAULTS[name]
    with pytest.raises(BadInput, match=words[0]):
        merge_acceptance([(f"s{i}", artifact) for i, artifact in enumerate(inputs)])


def test_merge_counts_the_positions_of_each_shard_from_its_counts():
    shards = [measured_shard("0/2", outside_draft_vocab=0.5), measured_shard("1/2", counts=[[0, 4, 0]],
                                                                             outside_draft_vocab=0.25)]
    merged = merge_acceptance([("a", shards[0]), ("b", {k: v for k, v in shards[1].items() if k != "samples"})])
    assert merged["samples"] == 8 and merged["outside_draft_vocab"] == 3 / 8 and merged["prompts"] == 2


def test_shard_and_merge_commands(pair, tmp_path):
    draft, target = pair
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\nthe quick brown fox\nzz\n")
    models = ["--draft", draft, "--target", target, "--dtype", "float32", "--data", str(prompts), "--greedy",
              "--width", "2", "--continuation-tokens", "5"]
    paths = [tmp_path / f"acc-{i}.json" for i in range(2)]
    for i, path in enumerate(paths):
        assert sequoia("measure-acceptance", *models, "--shard", f"{i}/2", "--out", str(path)).returncode == 0
    whole = tmp_path / "whole.json"
    assert sequoia("measure-acceptance", *models, "--out", str(whole)).returncode == 0
    merged = tmp_path / "merged.json"
    done = sequoia("merge-acceptance", *map(str, paths), "--out", str(merged))
    assert done.returncode == 0, done.stderr
    assert json.loads(merged.read_text()) == json.loads(whole.read_text())
    assert_one_line_error(sequoia("measure-acceptance", *models, "--shard", "2/2", "--out", str(whole)), "--shard")
    assert_one_line_error(sequoia("measure-acceptance", *models, "--shard", "5/9", "--out", str(whole)),
                          "only 3 prompts")
    assert_one_line_error(sequoia("merge-acceptance", str(paths[0]), str(paths[0]), "--out", str(merged)), "again")


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
    assert sum(vector["samples_by_level"]) == vector["samples"] == sum(map(sum, vector["counts"]))
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
    setup, plain = {"quantize": "int8", "vocab": 64}, {"quantize": "none", "vocab": None, "placement": None}
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
    assert_one_line_error(sequoia("profile-hw", "--target", target, "--max-tokens", "0", "--out", str(out)),
                          "--max-tokens")
    assert_one_line_error(sequoia("profile-hw", "--target", target, "--max-tokens", "64", "--context-length", "250",
                                  "--out", str(out)), "context")
    assert_one_line_error(sequoia("measure-acceptance", "--draft", draft, "--target", target, "--data", "mt-bench",
                                  "--width", "0", "--out", str(out)), "--width")
    assert_one_line_error(sequoia("measure-acceptance", "--draft", draft, "--target", target, "--data",
                                  str(tmp_path / "none.jsonl"), "--out", str(out)), "none.jsonl")
    assert not out.exists()


@pytest.mark.parametrize("text", ["0/" + "9" * 5000, "1/" + "1" * 19, "٠/٢", "2/2", "a/b", "1"])
def test_a_shard_that_is_not_i_of_n_is_one_line(text):
    from sequoia_cli.stages.measure_acceptance import shard_of

    with pytest.raises(BadInput, match="give I/N"):
        shard_of(text)
