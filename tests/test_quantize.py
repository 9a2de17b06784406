"""Cheap drafts (and quantized targets): the kernels compute what their weights say, the draft's
setup never changes decode's output, a sub-vocabulary draft proposes only its ids, bad setups."""

import json

import pytest
import torch
from torch import nn

from sequoia_cli.engine import Sampling, _draft_tree, generate, tree_layout
from sequoia_cli.errors import BadInput
from sequoia_cli.kv import new_cache
from sequoia_cli.quantize import (
    INT4_GROUP,
    Int4Linear,
    Int8Linear,
    PackedLinear,
    SubVocabHead,
    keep_vocab,
    kept_ids,
    pack_linears,
    quantize_linears,
    set_up,
)
from sequoia_cli.tree import best_tree, tree_table
from tests.conftest import assert_one_line_error, sequoia
from tests.test_decode import TWO_LEVELS, assert_first_two_tokens_follow, prompt, reference_greedy
from tests.tiny import noisy_copy, tiny_model, tiny_tokenizer

PACKS = pytest.mark.skipif(not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                           reason="this CPU's oneDNN has no bf16 kernels")
DP_TREE = best_tree(tree_table([0.5, 0.2, 0.1, 0.05], 16, 5), 16, 5)


def linear(rows: int, cols: int, dtype=torch.bfloat16) -> nn.Linear:
    torch.manual_seed(rows + cols)
    return nn.Linear(cols, rows, bias=True).to(dtype)


def test_int8_weights_round_each_row_to_127_steps_and_the_kernel_uses_them():
    layer = linear(48, 128)
    q = Int8Linear(layer)
    dequantized = q.weight_int8.float() * q.scale.float()[:, None]
    step = q.scale.float()[:, None]
    assert ((dequantized - layer.weight.float()).abs() <= step * 0.501).all()
    x = torch.randn(5, 128, dtype=torch.bfloat16)
    exact = x.float() @ dequantized.T + layer.bias.float()
    torch.testing.assert_close(q(x).float(), exact, atol=0.05, rtol=0.02)


def test_int4_weights_take_16_levels_per_group_and_the_kernel_uses_them():
    layer = linear(32, 256)
    q = Int4Linear(layer)
    scale, zero = q.scales_and_zeros.float().transpose(0, 1).unbind(-1)
    assert scale.shape == (32, 256 // INT4_GROUP)
    # Rebuild the weights from the codes the CPU kernel packs: a 1-hot input reads one column.
    columns = q(torch.eye(256, dtype=torch.bfloat16)).float() - layer.bias.float()
    groups = layer.weight.float().reshape(32, -1, INT4_GROUP)
    rebuilt = columns.T.reshape(32, -1, INT4_GROUP)
    # Half a step, plus the bf16 rounding of the kernel's sums.
    assert ((rebuilt - groups).abs() <= scale[..., None] * 0.5 + 0.01 * groups.abs().amax(-1, keepdim=True)).all()
    x = torch.randn(3, 2, 256, dtype=torch.bfloat16)
    torch.testing.assert_close(q(x).float(), x.float() @ columns + layer.bias.float(), atol=0.1, rtol=0.02)


def test_every_linear_layer_that_fits_is_quantized_the_output_layer_too():
    for mode, kind in (("int8", Int8Linear), ("int4", Int4Linear)):
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
    ids = torch.tensor([[3, 9, 1]])
    before = model(input_ids=ids).logits
    keep_vocab(model, [0, 5, 9, 30])
    assert isinstance(model.get_output_embeddings(), SubVocabHead)
    after = model(input_ids=ids).logits
    torch.testing.assert_close(after[..., [0, 5, 9, 30]], before[..., [0, 5, 9, 30]])
    outside = torch.ones(40, dtype=torch.bool)
    outside[[0, 5, 9, 30]] = False
    assert torch.isneginf(after[..., outside]).all()


def test_a_sub_vocabulary_draft_never_proposes_another_id():
    target = tiny_model(vocab=60, seed=1)
    draft = keep_vocab(noisy_copy(target, 0.3), list(range(0, 60, 3)))
    layout = tree_layout(DP_TREE)
    generator = torch.Generator().manual_seed(0)
    for temperature, method in ((1.0, "sequoia"), (1.5, "specinfer"), (1.0, "topk"), (0.0, "sequoia")):
        for seed in range(5):
            tokens, _, alive = _draft_tree(new_cache(draft, "eager", 64), torch.tensor(prompt(6, seed, 60)), layout,
                                           Sampling(temperature, 1.0, method), 60, generator)
            assert all(int(t) % 3 == 0 for t in tokens[1:][alive[1:]])


@pytest.mark.parametrize("setup", [("int8", None), ("int4", None), ("none", 24), ("int8", 24)])
def test_greedy_is_token_identical_to_generate_with_a_cheap_draft(setup):
    target = tiny_model(vocab=97, hidden=128, seed=1)
    draft = set_up(noisy_copy(target, 0.3), tiny_tokenizer(), *setup)
    for seed in range(3):
        ids = prompt(5 + 4 * seed, seed)
        result = generate(target, draft, ids, tree_layout(DP_TREE), Sampling(), 24, set(), torch.Generator())
        assert result.output_ids == reference_greedy(target, ids, 24)


def test_greedy_with_a_quantized_target_is_that_targets_greedy_generation():
    target = quantize_linears(tiny_model(vocab=97, hidden=128, seed=1), "int8")
    draft = noisy_copy(tiny_model(vocab=97, hidden=128, seed=1), 0.3)
    ids = prompt(7, 0)
    result = generate(target, draft, ids, tree_layout(DP_TREE), Sampling(), 24, set(), torch.Generator())
    assert result.output_ids == reference_greedy(target, ids, 24)


@pytest.mark.parametrize("setup", ["int8", "sub-vocabulary"])
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


def test_a_pair_config_sets_the_default_setup_and_options_override_it(tmp_path, monkeypatch):
    import yaml

    from sequoia_cli import pairs
    from sequoia_cli.loading import ModelChoice, setups_of

    def model_setups(draft, target, draft_quantize, target_quantize, draft_vocab):
        choice = ModelChoice(draft_quantize=draft_quantize, target_quantize=target_quantize, draft_vocab=draft_vocab)
        return setups_of(choice, draft, target, None)

    config = yaml.safe_load((pairs.configs_dir() / "qwen2.5-coder.yaml").read_text())
    config["draft"]["setup"] = {"quantize": "int4", "vocab": 32000}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(pairs, "configs_dir", lambda: tmp_path)
    assert model_setups("mine", "mine", None, None, None) == {
        "draft": {"quantize": "int4", "vocab": 32000}, "target": {"quantize": "none", "vocab": None, "placement": None}}
    assert model_setups("mine", "mine", "none", "int8", 4000) == {
        "draft": {"quantize": "none", "vocab": 4000}, "target": {"quantize": "int8", "vocab": None, "placement": None}}
    assert model_setups("some/draft", "some/target", None, None, None)["draft"] == {"quantize": "none", "vocab": None}
    for bad, words in (({"quantize": "int2"}, "setup.quantize"), ({"vocab": -3}, "setup.vocab"),
                       ({"placement": "x"}, "may set only")):
        config["draft"]["setup"] = bad
        (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
        with pytest.raises(BadInput, match=words):
            model_setups("mine", "mine", None, None, None)


def test_measure_acceptance_counts_the_target_tokens_a_sub_vocabulary_draft_cannot_propose():
    from sequoia_cli.models import encode_prompt
    from stages.measure_acceptance import Request, measure_acceptance

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
    layout = tree_layout(DP_TREE)

    def outputs():
        return [generate(target, draft, prompt(6 + seed, seed), layout, sampling, 24, set(),
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
