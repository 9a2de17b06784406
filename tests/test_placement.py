"""A target placed by accelerate (--device-map, --max-memory, --offload-folder) on tiny models:
greedy decode stays token-identical to the whole target's own `generate`, and bad placement input
is one line and exit 2."""

import json

import pytest
import torch

from sequoia_cli.devices import input_device
from sequoia_cli.models import load_model, placement_of
from sequoia_cli.sampling import Sampling
from sequoia_cli.tree import best_tree, tree_table
from tests.conftest import assert_one_line_error, sequoia
from tests.tiny import decoder

DP_TREE = best_tree(tree_table([0.5, 0.2, 0.1, 0.05], 16, 5), 16, 5)
SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.norm": "cpu", "lm_head": "disk"}


def placements(tmp_path) -> dict:
    split = tmp_path / "split.json"
    split.write_text(json.dumps(SPLIT))
    return {
        # CPU memory for a few kB only: accelerate sends every layer it cannot hold to disk.
        "offloaded": placement_of("auto", "cpu=20KB", str(tmp_path / "offload-auto")),
        "split": placement_of(str(split), None, str(tmp_path / "offload-split")),
    }


@pytest.mark.parametrize("kind", ["offloaded", "split"])
def test_greedy_with_a_placed_target_is_token_identical_to_the_whole_target(pair, tmp_path, kind):
    draft_path, target_path = pair
    placement = placements(tmp_path)[kind]
    whole = load_model(target_path, "target", torch.device("cpu"), torch.float32)
    placed = load_model(target_path, "target", torch.device("cpu"), torch.float32, placement)
    draft = load_model(draft_path, "draft", torch.device("cpu"), torch.float32)
    assert "disk" in set(placed.hf_device_map.values())
    assert any(p.device.type == "meta" for p in placed.parameters())  # read from disk at each forward
    assert input_device(placed) == torch.device("cpu")
    for seed, tree in enumerate(([-1], DP_TREE)):
        ids = torch.randint(3, 60, (6 + seed,), generator=torch.Generator().manual_seed(seed)).tolist()
        reference = whole.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=20, pad_token_id=0,
                                   eos_token_id=None)[0, len(ids):].tolist()
        result = decoder(placed, draft, tree, Sampling(), 20).generate(ids, torch.Generator())
        assert result.output_ids == reference


def test_profile_records_the_placement_and_decode_runs_with_it(pair, tmp_path):
    draft, target = pair
    profile, offload = tmp_path / "profile.json", tmp_path / "offload"
    placed = ["--max-memory", "cpu=20KB", "--offload-folder", str(offload)]
    models = ["--draft", draft, "--target", target, "--dtype", "float32"]
    done = sequoia("profile-hw", *models, *placed, "--max-tokens", "4", "--context-length", "8", "--repeats", "1",
                   "--out", str(profile))
    assert done.returncode == 0, done.stderr
    setup = json.loads(profile.read_text())["target"]["setup"]
    assert setup["placement"] == {"device_map": "auto", "max_memory": {"cpu": "20KB"}, "offload_folder": str(offload)}
    done = sequoia("decode", *models, *placed, "--method", "chain", "--chain-length", "3", "--prompt", "hi",
                   "--greedy", "--max-new-tokens", "6")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("options, words", [
    (["--max-memory", "gpu0=1GiB"], ["--max-memory", "unknown device 'gpu0'"]),
    (["--max-memory", "cpu=lots"], ["--max-memory 'cpu=lots'", "DEVICE=SIZE"]),
    (["--max-memory", "cpu"], ["DEVICE=SIZE"]),
    (["--max-memory", "cuda:3=1GiB"], ["cuda:3", "is not here"]),
    (["--device-map", "nowhere.json"], ["--device-map nowhere.json", "cannot be read"]),
    (["--offload-folder", "/proc/no-such/offload"], ["--offload-folder", "cannot be written"]),
    (["--max-memory", "cpu=1GiB", "--target-quantize", "int8"], ["--target-quantize", "do not go together"]),
])
def test_bad_placement_is_one_line(pair, tmp_path, options, words):
    draft, target = pair
    out = tmp_path / "profile.json"
    done = sequoia("profile-hw", "--draft", draft, "--target", target, *options, "--out", str(out))
    assert_one_line_error(done, *words)
    assert not out.exists()


def test_a_device_map_file_must_map_modules_to_devices(tmp_path):
    bad = tmp_path / "map.json"
    bad.write_text("[1, 2")
    with pytest.raises(Exception, match="not valid JSON"):
        placement_of(str(bad), None, None)
    bad.write_text(json.dumps({"model.layers.0": "tpu"}))
    with pytest.raises(Exception, match="unknown device 'tpu'"):
        placement_of(str(bad), None, None)
