"""What the models impose, checked before any work: children per node within the vocabulary,
prompts within the context (before the weights load), seeds within 0..2**63-1; and model folders
transformers cannot read, each one line naming the folder."""

import json
import os
import random
import shutil

import pytest
from sequoia_cli.stages.measure_acceptance import Request, measure_acceptance

from sequoia_cli import models
from sequoia_cli.errors import BadInput
from sequoia_cli.sampling import Sampling
from tests.conftest import assert_one_line_error, sequoia
from tests.tiny import tiny_model, tiny_tokenizer

# The tiny pair: a byte tokenizer of 257 ids (one token per ASCII character), a context of 256.
VOCAB, CONTEXT = 257, 256


@pytest.fixture
def no_weights(monkeypatch):
    """Loading any model's weights fails the test: what is refused is refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(models, "load_model", refuse)


def prompts_file(folder, *lines) -> str:
    path = folder / "prompts.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def measure(pair, data: str, out, *options):
    draft, target = pair
    return sequoia("measure-acceptance", "--draft", draft, "--target", target, "--dtype", "float32", "--data", data,
                   "--greedy", "--continuation-tokens", "4", *options, "--out", out)


LIMIT_FAULTS = {
    # name: (command, its options past the models; {w}: the work folder), words the error must contain
    "width past the vocabulary": (["measure-acceptance", "--data", "{w}/short.txt", "--width", "300"],
                                  ["--width", "300", f"vocabulary has {VOCAB}"]),
    "measured prompt past the context": (["measure-acceptance", "--data", "{w}/long.txt"],
                                         ["prompt 1", f"context of {CONTEXT}", "--continuation-tokens"]),
    "continuation past the context": (["measure-acceptance", "--data", "{w}/short.txt", "--continuation-tokens", "300"],
                                      ["prompt 1", "300 tokens of continuation", f"context of {CONTEXT}"]),
    "a node with more children than the vocabulary": (["decode", "--tree", "{w}/wide.json", "--prompt", "hi"],
                                                      ["--tree", "300 children", f"vocabulary has {VOCAB}"]),
    "decoded prompt past the context": (["decode", "--method", "autoregressive", "--data", "{w}/long.txt"],
                                        ["prompt 1", f"context of {CONTEXT}"]),
    "streamed prompt past the context": (["decode", "--method", "chain", "--chain-length", "2", "--prompt", "x" * 300],
                                         ["prompt 1", f"context of {CONTEXT}"]),
}


@pytest.mark.parametrize("name", LIMIT_FAULTS)
def test_work_the_models_cannot_serve_is_refused_before_their_weights_load(name, pair, tmp_path, no_weights):
    command, words = LIMIT_FAULTS[name]
    work = tmp_path / "work"
    work.mkdir()
    (work / "short.txt").write_text("hello\n", encoding="utf-8")
    (work / "long.txt").write_text("x" * 300 + "\n", encoding="utf-8")
    wide = [-1] + [0] * 300
    (work / "wide.json").write_text(json.dumps({"format": "sequoia-tree/1", "parents": wide, "size": len(wide),
                                                "depth": 1}), encoding="utf-8")
    before = sorted(os.listdir(work))
    out = tmp_path / "out.json"
    draft, target = pair
    args = [part.replace("{w}", str(work)) for part in command]
    done = sequoia(*args, "--draft", draft, "--target", target, "--dtype", "float32", "--out", out)
    assert_one_line_error(done, *words)
    assert not out.exists() and sorted(os.listdir(work)) == before


def test_measuring_refuses_a_width_past_the_vocabulary_before_decoding():
    tokenizer = tiny_tokenizer()
    model = tiny_model("qwen2", vocab=len(tokenizer), seed=3)
    with pytest.raises(BadInput, match="width asks for 300 children"):
        measure_acceptance(model, model, tokenizer, Request([{"prompt": "abc"}], Sampling(), 300, 4, seed=0))


def test_measuring_refuses_a_reference_that_runs_past_the_context():
    tokenizer = tiny_tokenizer()
    model = tiny_model("qwen2", vocab=len(tokenizer), seed=3, context=64)
    records = [{"prompt": "x" * 40, "reference": "y" * 40}]
    with pytest.raises(BadInput, match="prompt 1 has 40 tokens: with 30 tokens of continuation"):
        measure_acceptance(model, model, tokenizer, Request(records, Sampling(), 2, 30, seed=0, use_reference=True))


@pytest.mark.parametrize("seed", [2**63, 10**20, -1])
@pytest.mark.parametrize("command", [
    ["profile-hw", "--out", "{w}/profile.json"],
    ["bench", "--out-dir", "{w}/bench"],
    ["measure-acceptance", "--data", "mt-bench", "--out", "{w}/acc.json"],
    ["decode", "--method", "autoregressive", "--prompt", "hi"],
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_a_seed_out_of_range_is_refused_before_any_model_loads(command, seed, pair, tmp_path, no_weights):
    draft, target = pair
    args = [part.replace("{w}", str(tmp_path)) for part in command]
    done = sequoia(*args, "--draft", draft, "--target", target, "--seed", seed)
    assert_one_line_error(done, "--seed", str(seed), str(2**63 - 1))
    assert os.listdir(tmp_path) == []


def test_the_largest_seed_runs(pair, tmp_path):
    """A prompt's generator takes 64 bits: the largest seed's stream wraps around, not overflows."""
    data, out = prompts_file(tmp_path, "hello", "abc"), tmp_path / "acc.json"
    seed = str(2**63 - 1)
    done = measure(pair, data, out, "--seed", seed)
    assert done.returncode == 0, done.stderr
    draft, target = pair
    done = sequoia("decode", "--draft", draft, "--target", target, "--method", "autoregressive", "--prompt", "hi",
                   "--temperature", "0.8", "--max-new-tokens", "3", "--seed", seed)
    assert done.returncode == 0, done.stderr


def broken_copy(folder, tmp_path, name: str) -> str:
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    return str(copy)


def test_an_unknown_model_type_is_named_with_its_folder(pair, tmp_path, no_weights):
    draft, target = pair
    broken = broken_copy(target, tmp_path, "unknown-type")
    config = json.loads((tmp_path / "unknown-type" / "config.json").read_text())
    (tmp_path / "unknown-type" / "config.json").write_text(json.dumps({**config, "model_type": "no-such-model"}))
    words = ["target model", broken, "no-such-model"]
    # Beside a draft, it is not blamed on the tokenizers.
    assert_one_line_error(sequoia("decode", "--draft", draft, "--target", broken, "--method", "chain",
                                  "--chain-length", "2", "--prompt", "hi"), *words)
    assert_one_line_error(sequoia("decode", "--target", broken, "--method", "autoregressive", "--prompt", "hi"), *words)


RANDOM = random.Random(0).randbytes(4096)


@pytest.mark.parametrize("weights, content", [("model.safetensors", RANDOM), ("model.safetensors", b""),
                                              ("pytorch_model.bin", RANDOM), ("pytorch_model.bin", b"")],
                         ids=["random safetensors", "empty safetensors", "random bin", "empty bin"])
def test_weights_transformers_cannot_read_are_named_with_their_folder(weights, content, pair, tmp_path):
    draft, target = pair
    broken = broken_copy(target, tmp_path, "broken")
    os.remove(os.path.join(broken, "model.safetensors"))
    with open(os.path.join(broken, weights), "wb") as handle:
        handle.write(content)
    out = tmp_path / "profile.json"
    done = sequoia("profile-hw", "--target", broken, "--max-tokens", "2", "--repeats", "1", "--out", out)
    assert_one_line_error(done, "target model", broken, "weights file")
    assert not out.exists()
