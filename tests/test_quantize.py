"""Cheap drafts (and quantized targets): the kernels compute what their weights say, the draft's
setup never changes decode's output, a sub-vocabulary draft proposes only its ids, bad setups,
per-device setups. Tensors live on $SEQUOIA_TEST_DEVICE; the CUDA kernels' own tests run wherever
a GPU is."""

import json

import pytest
import torch
from torch import nn

from sequoia_cli.decoder import draft_tree
from sequoia_cli.errors import BadInput
from sequoia_cli.kv import new_cache
from sequoia_cli.layout import tree_layout
from sequoia_cli.quantize import (
    INT4_GROUP,
    INT4_TILES,
    Int4Linear,
    Int8Linear,
    PackedLinear,
    SubVocabHead,
    check_kernels,
    int4_codes,
    keep_vocab,
    kept_ids,
    nibbles,
    pack_linears,
    quantize_linears,
    set_up,
)
from sequoia_cli.sampling import Sampling
from sequoia_cli.tree import best_tree, tree_table
from tests.conftest import assert_one_line_error, sequoia
from tests.test_decode import TWO_LEVELS, assert_first_two_tokens_follow, prompt, reference_greedy
from tests.tiny import TEST_DEVICE, decoder, noisy_copy, tiny_model, tiny_tokenizer

PACKS = pytest.mark.skipif(TEST_DEVICE.type != "cpu" or not (torch.backends.mkldnn.is_available()
                                                            and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                           reason="oneDNN's bf16 kernels: on a CPU that has them")
INT8 = pytest.mark.skipif(TEST_DEVICE.type != "cpu", reason="int8 runs on a CPU only (no weight-only int8 CUDA kernel)")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
DP_TREE = best_tree(tree_table([0.5, 0.2, 0.1, 0.05], 16, 5), 16, 5)


def linear(rows: int, cols: int, dtype=torch.bfloat16, device=TEST_DEVICE) -> nn.Linear:
    torch.manual_seed(rows + cols)
    return nn.Linear(cols, rows, bias=True).to(device, dtype)


@INT8
def test_int8_weights_round_each_row_to_127_steps_and_the_kernel_uses_them():
    layer = linear(48, 128)
    q = Int8Linear(layer)
    dequantized = q.weight_int8.float() * q.scale.float()[:, None]
    step = q.scale.float()[:, None]
    assert ((dequantized - layer.weight.float()).abs() <= step * 0.501).all()
    x = torch.randn(5, 128, dtype=torch.bfloat16, device=TEST_DEVICE)
    exact = x.float() @ dequantized.T + layer.bias.float()
    torch.testing.assert_close(q(x).float(), exact, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("device", DEVICES)
def test_int4_weights_take_16_levels_per_group_and_the_kernel_uses_them(device):
    layer = linear(32, 256, device=device)
    q = Int4Linear(layer)
    codes, scales_and_zeros = int4_codes(layer.weight)
    assert torch.equal(q.scales_and_zeros, scales_and_zeros) and 0 <= codes.min() <= codes.max() <= 15
    scale, zero = scales_and_zeros.float().transpose(0, 1).unbind(-1)
    assert scale.shape == (32, 256 // INT4_GROUP)
    # w = (q - 8) * scale + zero: each weight within half a step (and the bf16 rounding of the zero).
    groups = layer.weight.float().reshape(32, -1, INT4_GROUP)
    dequantized = (codes.float().reshape(32, -1, INT4_GROUP) - 8.0) * scale[..., None] + zero[..., None]
    assert ((dequantized - groups).abs() <= scale[..., None] * 0.5 + 0.01 * groups.abs().amax(-1, keepdim=True)).all()
    # A 1-hot input reads one column of the packed weights: every code sits where the kernel reads it
    # (off by the bf16 rounding of the kernel's sums, far below the step a misplaced code is off by).
    columns = q(torch.eye(256, dtype=torch.bfloat16, device=device)).float() - layer.bias.float()
    assert ((columns.T.reshape(32, -1, INT4_GROUP) - dequantized).abs() <= scale[..., None] * 0.5).all()
    dequantized = dequantized.reshape(32, 256)
    x = torch.randn(3, 2, 256, dtype=torch.bfloat16, device=device)
    torch.testing.assert_close(q(x).float(), x.float() @ dequantized.T + layer.bias.float(), atol=0.1, rtol=0.02)
    assert q(x.float()).dtype == torch.float32  # other activations go through the kernel's bf16 and come back


def test_int4_layers_off_the_cpu_pack_for_the_cuda_kernel():
    # Two codes a byte, the even column high: gpt-fast's and torchao's order for this kernel.
    assert nibbles(torch.tensor([[1, 2, 3, 4], [15, 0, 0, 15]])).tolist() == [[0x12, 0x34], [0xF0, 0x0F]]
    # Meta tensors run PyTorch's own checks of the CUDA packing (a uint8 (N, K/2) input) without a GPU.
    q = Int4Linear(nn.Linear(256, 48, device="meta", dtype=torch.bfloat16))
    assert q.packed.dtype == torch.int32 and q.packed.shape == (48 // 8, 256 // (16 * INT4_TILES), 32, INT4_TILES // 2)


def test_each_quantization_runs_on_its_own_kernel_or_is_refused_in_one_line(monkeypatch):
    cuda = torch.device("cuda")
    for mode in ("none", "int8", "int4"):
        check_kernels(mode, torch.device("cpu"), "draft_quantize")
    check_kernels("none", cuda, "draft_quantize")
    with pytest.raises(BadInput, match="no weight-only int8 kernel for cuda; use int4 or none") as refused:
        check_kernels("int8", cuda, "draft_quantize")
    assert refused.value.settings == ("draft_quantize",) and "\n" not in str(refused.value)
    for capability, fits_kernel in (((8, 0), True), ((9, 0), True), ((7, 5), False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        if fits_kernel:
            check_kernels("int4", cuda, "target_quantize")
        else:
            with pytest.raises(BadInput, match="compute capability 8.0 or above, this GPU has 7.5; use none"):
                check_kernels("int4", cuda, "target_quantize")


@pytest.mark.parametrize("mode, kind", [pytest.param("int8", Int8Linear, marks=INT8), ("int4", Int4Linear)])
def test_every_linear_layer_that_fits_is_quantized_the_output_layer_too(mode, kind):
    model = quantize_linears(tiny_model(hidden=128, vocab=112), mode)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    quantized = [m for m in model.modules() if isinstance(m, kind)]
    assert isinstance(model.get_output_embeddings(), kind)
    # int4 packs 16 rows at a time: the 2 x 32-row k/v projections fit, nothing is left out.
    assert not linears and len(quantized) == 2 * 7 + 1


def test_kept_ids_are_the_special_tokens_and_the_lowest_ids():
    tokenizer = tiny_tokenizer()  # 256 bytes, then <eos> = 256
    assert kept_ids(tokenizer, 5, 257) == [0, 1, 2, 3, 256]
    assert kept_ids(tokenizer, 257, 257) == list(range(257))
    for bad in (1, 258):
        with pytest.raises(BadInput, match="draft_vocab"):
            kept_ids(tokenizer, bad, 257)


def test_a_sub_vocabulary_head_scores_its_ids_as_before_and_no_other():
    model = tiny_model(vocab=40)
    ids = torch.tensor([[3, 9, 1]], device=TEST_DEVICE)
    before = model(input_ids=ids).logits
    keep_vocab(model, [0, 5, 9, 30])
    assert isinstance(model.get_output_embeddings(), SubVocabHead)
    after = model(input_ids=ids).logits
    torch.testing.assert_close(after[..., [0, 5, 9, 30]], before[..., [0, 5, 9, 30]])
    outside = torch.ones(40, dtype=torch.bool, device=TEST_DEVICE)
    outside[[0, 5, 9, 30]] = False
    assert torch.isneginf(after[..., outside]).all()


def test_a_sub_vocabulary_draft_never_proposes_another_id():
    target = tiny_model(vocab=60, seed=1)
    draft = keep_vocab(noisy_copy(target, 0.3), list(range(0, 60, 3)))
    layout = tree_layout(DP_TREE, TEST_DEVICE)
    generator = torch.Generator(TEST_DEVICE).manual_seed(0)
    for temperature, method in ((1.0, "sequoia"), (1.5, "specinfer"), (1.0, "topk"), (0.0, "sequoia")):
        for seed in range(5):
            pending = torch.tensor(prompt(6, seed, 60), device=TEST_DEVICE)
            drafted = draft_tree(new_cache(draft, "eager", 64), pending, layout, Sampling(temperature, 1.0, method),
                                 60, generator)
            assert all(int(t) % 3 == 0 for t in drafted.tokens[1:][drafted.alive[1:]])


@pytest.mark.parametrize("setup", [pytest.param(("int8", None), marks=INT8), ("int4", None), ("none", 24),
                                   pytest.param(("int8", 24), marks=INT8)])
def test_greedy_is_token_identical_to_generate_with_a_cheap_draft(setup):
    target = tiny_model(vocab=97, hidden=128, seed=1)
    draft = set_up(noisy_copy(target, 0.3), tiny_tokenizer(), *setup)
    for seed in range(3):
        ids = prompt(5 + 4 * seed, seed)
        result = decoder(target, draft, DP_TREE, Sampling(), 24).generate(ids, torch.Generator(TEST_DEVICE))
        assert result.output_ids == reference_greedy(target, ids, 24)


@pytest.mark.parametrize("mode", [pytest.param("int8", marks=INT8), "int4"])
def test_greedy_with_a_quantized_target_is_that_targets_greedy_generation(mode):
    target = quantize_linears(tiny_model(vocab=97, hidden=128, seed=1), mode)
    draft = noisy_copy(tiny_model(vocab=97, hidden=128, seed=1), 0.3)
    ids = prompt(7, 0)
    result = decoder(target, draft, DP_TREE, Sampling(), 24).generate(ids, torch.Generator(TEST_DEVICE))
    assert result.output_ids == reference_greedy(target, ids, 24)


@pytest.mark.parametrize("setup", [pytest.param("int8", marks=INT8), "sub-vocabulary"])
def test_sampled_tokens_follow_the_target_with_a_cheap_draft(setup):
    target = tiny_model("qwen2", vocab=6, seed=2, hidden=128)
    draft = noisy_copy(target, 0.6, seed=1)
    # The sub-vocabulary leaves out ids the target draws often: they come from the residual.
    draft = quantize_linears(draft, "int8") if setup == "int8" else keep_vocab(draft, [0, 2, 5])
    assert_first_two_tokens_follow(target, draft, TWO_LEVELS, "sequoia", runs=1200)


def test_setup_options_bad_input_and_the_tree_warning(pair, tmp_path):
    draft, target = pair
    base = ["decode", "--draft", draft, "--target", target, "--dtype", "float32", "--method", "chain",
            "--chain-length", "2", "--prompt", "hi", "--max-new-tokens", "4"]
    assert_one_line_error(sequoia(*base, "--draft-quantize", "int3"), "--draft-quantize", "int3")
    assert_one_line_error(sequoia(*base, "--target-quantize", "fp8"), "--target-quantize", "fp8")
    assert_one_line_error(sequoia(*base, "--draft-vocab", "1"), "--draft-vocab 1")
    assert_one_line_error(sequoia(*base, "--draft-vocab", "100000"), "--draft-vocab 100000")
    done = sequoia(*base, "--draft-quantize", "int8", "--draft-vocab", "64", "--greedy")
    plain = sequoia(*base, "--greedy")
    assert done.returncode == 0 and plain.returncode == 0, done.stderr + plain.stderr
    assert done.stdout == plain.stdout
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"format": "sequoia-tree/1", "parents": [-1, 0, 0], "size": 3, "depth": 1,
                                "source": {"draft_setup": {"quantize": "int4", "vocab": None}}}))
    tree_run = ["decode", "--draft", draft, "--target", target, "--dtype", "float32", "--tree", str(tree),
                "--prompt", "hi", "--max-new-tokens", "4", "--greedy"]
    warned = sequoia(*tree_run, "--draft-quantize", "int8")
    assert warned.returncode == 0
    assert "planned from an acceptance vector of the draft at quantize int4" in warned.stdout + warned.stderr
    assert "planned" not in (sequoia(*tree_run, "--draft-quantize", "int4").stdout)


@pytest.fixture
def own_pair(tmp_path, monkeypatch):
    """write(draft_sections): the built-in pair's config as pair 'mine', its draft's setup sections
    replaced by `draft_sections`; the configs folder then holds it alone."""
    import yaml

    from sequoia_cli import pairs

    config = yaml.safe_load((pairs.configs_dir() / "qwen2.5-coder.yaml").read_text())
    monkeypatch.setattr(pairs, "configs_dir", lambda: tmp_path)

    def write(draft_sections: dict) -> None:
        draft = {key: value for key, value in config["draft"].items() if not key.startswith("setup")}
        (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**config, "draft": {**draft, **draft_sections}}))

    return write


def model_setups(draft, target, draft_quantize=None, target_quantize=None, draft_vocab=None, device_type="cpu"):
    from sequoia_cli.loading import ModelChoice, setups_of

    choice = ModelChoice(draft_quantize=draft_quantize, target_quantize=target_quantize, draft_vocab=draft_vocab)
    return setups_of(choice, draft, target, None, device_type)


def test_a_pair_config_sets_the_default_setup_and_options_override_it(own_pair):
    own_pair({"setup": {"quantize": "int4", "vocab": 32000}})
    assert model_setups("mine", "mine") == {
        "draft": {"quantize": "int4", "vocab": 32000}, "target": {"quantize": "none", "vocab": None, "placement": None}}
    assert model_setups("mine", "mine", "none", "int8", 4000) == {
        "draft": {"quantize": "none", "vocab": 4000}, "target": {"quantize": "int8", "vocab": None, "placement": None}}
    assert model_setups("some/draft", "some/target")["draft"] == {"quantize": "none", "vocab": None}
    for bad, words in (({"quantize": "int2"}, "'draft.setup.quantize'"), ({"vocab": -3}, "'draft.setup.vocab'"),
                       ({"placement": "x"}, "'draft.setup' may set only")):
        own_pair({"setup": bad})
        with pytest.raises(BadInput, match=words):
            model_setups("mine", "mine")


def test_a_device_types_setup_changes_the_default_setup_on_that_device_alone(own_pair, monkeypatch):
    from sequoia_cli import models
    from sequoia_cli.loading import ModelChoice, resolve

    own_pair({"setup": {"quantize": "int4", "vocab": 32000}, "setup_cuda": {"quantize": "none"}})
    assert model_setups("mine", "mine")["draft"] == {"quantize": "int4", "vocab": 32000}
    assert model_setups("mine", "mine", device_type="cuda")["draft"] == {"quantize": "none", "vocab": 32000}
    assert model_setups("mine", "mine", "int4", device_type="cuda")["draft"] == {"quantize": "int4", "vocab": 32000}
    own_pair({"setup_cpu": {"vocab": 4000}})
    assert model_setups("mine", "mine")["draft"] == {"quantize": "none", "vocab": 4000}
    assert model_setups("mine", "mine", device_type="cuda")["draft"] == {"quantize": "none", "vocab": None}
    # resolve reads the setups of the device it resolves (a CUDA device stood in for here, where none is).
    own_pair({"setup": {"quantize": "int4"}, "setup_cuda": {"vocab": 32000}})
    assert resolve(ModelChoice(pair="mine"), need_draft=True).setups["draft"] == {"quantize": "int4", "vocab": None}
    monkeypatch.setattr(models, "device_of", torch.device)
    cuda = resolve(ModelChoice(pair="mine", device="cuda:0"), need_draft=True)
    assert cuda.setups["draft"] == {"quantize": "int4", "vocab": 32000} and cuda.engine == "cuda-graphs"


@pytest.mark.parametrize("sections, words", [
    ({"setup_gpu": {"quantize": "int4"}}, "'draft.setup_gpu' is not a setup: a model's setups are setup, setup_cpu,"
                                          " setup_cuda"),
    ({"setup_cuda": {"quantize": "int3"}}, "'draft.setup_cuda.quantize' is not one of none, int8, int4"),
    ({"setup_cuda": {"placement": "auto"}}, "'draft.setup_cuda' may set only quantize, vocab"),
    ({"setup_cpu": "int4"}, "'draft.setup_cpu' may set only quantize, vocab"),
])
def test_a_bad_device_setup_in_a_pair_config_is_a_one_line_error(own_pair, sections, words):
    own_pair(sections)
    with pytest.raises(BadInput) as bad:
        model_setups("mine", "mine")
    assert words in str(bad.value) and "\n" not in str(bad.value)


def test_measure_acceptance_counts_the_target_tokens_a_sub_vocabulary_draft_cannot_propose():
    from sequoia_cli.stages.measure_acceptance import Request, measure_acceptance

    from sequoia_cli.models import encode_prompt

    tokenizer = tiny_tokenizer()
    target = tiny_model(vocab=len(tokenizer), seed=1)
    draft = keep_vocab(noisy_copy(target, 0.3), list(range(0, len(tokenizer), 2)))  # the even ids
    records = [{"prompt": "hello"}, {"prompt": "xyz"}]
    request = Request(records, Sampling(), 4, 12, seed=0, chat_template=False)
    vector = measure_acceptance(target, draft, tokenizer, request)
    odd = total = 0
    for record in records:
        ids = encode_prompt(tokenizer, record["prompt"], False)
        continuation = reference_greedy(target, ids, 12)
        odd, total = odd + sum(token % 2 for token in continuation), total + len(continuation)
    assert 0 < odd < total and vector["outside_draft_vocab"] == pytest.approx(odd / total)
    # The draft never proposes an odd token, so no position whose token is odd is accepted.
    assert vector["rejected_all"] >= odd / total


@PACKS
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_packed_layers_give_the_same_logits_bit_for_bit(family):
    model = tiny_model(family, seed=1, hidden=64).to(torch.bfloat16)
    ids = torch.tensor([prompt(9, 0)])
    with torch.inference_mode():
        before = [model(input_ids=ids[:, :count]).logits for count in (1, 2, 9)]
        pack_linears(model)
        after = [model(input_ids=ids[:, :count]).logits for count in (1, 2, 9)]
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == 2 * 7 + 1
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@PACKS
def test_packing_changes_no_token_decode_outputs():
    target = tiny_model(vocab=97, hidden=64, seed=1).to(torch.bfloat16)
    draft = noisy_copy(target, 0.3)

    def outputs():
        return [decoder(target, draft, DP_TREE, sampling, 24).generate(prompt(6 + seed, seed),
                                                                       torch.Generator().manual_seed(seed)).output_ids
                for seed in range(3) for sampling in (Sampling(), Sampling(0.8, 0.9, "sequoia"))]

    before = outputs()
    pack_linears(target)
    pack_linears(draft)
    assert isinstance(target.get_output_embeddings(), PackedLinear)
    assert outputs() == before


def test_packing_leaves_other_dtypes_as_they_are():
    model = pack_linears(tiny_model())
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
