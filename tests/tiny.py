"""Tiny randomly initialised causal LMs, built in the test process (no download), on the device
the tests run on: $SEQUOIA_TEST_DEVICE (cpu where unset; `make gpu-check` sets cuda)."""

import copy
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sequoia_cli.decoder import DecodeConfig, Decoder
from sequoia_cli.sampling import Sampling

FAMILIES = ("qwen2", "llama", "gpt2")
TEST_DEVICE = torch.device(os.environ.get("SEQUOIA_TEST_DEVICE") or "cpu")


def tiny_model(family: str = "qwen2", vocab: int = 97, seed: int = 0, layers: int = 2, hidden: int = 32,
               context: int = 256, eos: int | None = None):
    torch.manual_seed(seed)
    if family == "qwen2":
        config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=context, tie_word_embeddings=False)
        model = Qwen2ForCausalLM(config)
    elif family == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                             max_position_embeddings=context)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4, n_positions=context)
        model = GPT2LMHeadModel(config)
    # Random init gives near-uniform logits; sharpen them so that drafts agree sometimes.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = 0
    return model.eval().float().to(TEST_DEVICE)


def tiny_tokenizer():
    """A byte-level tokenizer of 257 ids (256 bytes + <eos>), no merges."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {char: i for i, char in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


def noisy_copy(model, noise: float, seed: int = 0):
    """A draft that agrees with `model` often: its weights plus Gaussian noise."""
    draft = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)  # noise drawn on the host: one draft on every device
    with torch.no_grad():
        for weight in draft.parameters():
            sample = torch.randn(weight.shape, generator=generator).to(weight.device)
            weight.add_(noise * weight.std().nan_to_num(0.0) * sample)
    return draft


def save_tiny_pair(folder, family: str = "qwen2", noise: float = 0.3, target_layers: int | None = None):
    """Write a target and a draft (with one shared tokenizer) as model folders; return their paths.
    With `target_layers`, the target is `deepened` to that many layers (same logits, slower)."""
    tokenizer = tiny_tokenizer()
    target = tiny_model(family, vocab=len(tokenizer), seed=1, eos=tokenizer.eos_token_id)
    draft = noisy_copy(target, noise)
    if target_layers:
        target = deepened(target, target_layers)
    paths = []
    for name, model in (("target", target), ("draft", draft)):
        path = folder / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(str(path))
    return paths[1], paths[0]


def deepened(model, layers: int):
    """`model` (qwen2 or llama) with `layers` layers that computes the same logits: the added
    layers' output projections are zero, so each passes its input on. A target this slower than a
    draft made from `model` makes drafting pay."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):  # one attention type per layer
        config.layer_types = [config.layer_types[0]] * layers
    torch.manual_seed(0)
    deep = type(model)(config)
    deep.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        for name, weight in deep.named_parameters():
            index = name.split(".")[2] if name.startswith("model.layers.") else None
            if index is not None and int(index) >= model.config.num_hidden_layers and name.endswith(
                    ("o_proj.weight", "down_proj.weight")):
                weight.zero_()
    deep.generation_config = copy.deepcopy(model.generation_config)
    return deep.eval().float().to(TEST_DEVICE)


def decoder(target, draft, parents: list[int], sampling: Sampling = Sampling(), max_new_tokens: int = 30,
            **settings) -> Decoder:
    """A Decoder of the pair with the tree `parents`; `settings` are DecodeConfig's other fields."""
    return Decoder(DecodeConfig(target, draft, parents, sampling, max_new_tokens, **settings))
