"""Cheaper models for the same exact decode: weight-only quantization of a model's linear layers,
and a draft output layer over a sub-vocabulary.

A one-token forward reads every weight once, so its time follows the weights' bytes wherever the
reads outweigh the rest: int8 halves bf16's bytes, int4 quarters them. The draft only proposes, and
verification uses the distribution the draft really sampled from, so neither change can alter what
decode outputs; a quantized target *is* another model, against which every speedup is then measured.

Kernels: only PyTorch's own weight-only kernels, each fed the packing it reads, made once where
the weight lives (models are on their device before they are set up):

- CPU: `_weight_int8pack_mm` for int8, `_weight_int4pack_mm_for_cpu` for int4.
- CUDA: `_weight_int4pack_mm` for int4, a tensor-core kernel for compute capability 8.0 and above.
  int8 is refused on CUDA: PyTorch has no weight-only int8 kernel there, and dequantizing every
  weight in every forward would make the "cheaper" draft slower than the bf16 one.

A device or GPU that lacks the kernel is a one-line error before anything loads (check_kernels),
never a slow fallback. Both int4 kernels take bf16 activations: other dtypes are cast there and back.
The bf16 layers left on a CPU get their weights reordered once into oneDNN's blocked layout
(PackedLinear): the same products, without the stock path's slow reading of the plain one.
"""

import torch
from torch import nn

from sequoia_cli.errors import BadInput

QUANTIZE = ("none", "int8", "int4")
INT4_GROUP = 32  # input columns sharing one int4 scale and zero (the CUDA kernel takes 32 to 256)
# Rows quantized at a time: the float32 steps over a whole vocabulary-sized output layer would
# hold several copies of it at once.
ROW_BLOCK = 4096
INT4_TILES = 8  # both int4 kernels' packing: K must be a multiple of 16 * tiles
# PyTorch's weight-only kernels by device type and mode; nothing else runs a quantized layer.
KERNELS = {("cpu", "int8"): "_weight_int8pack_mm", ("cpu", "int4"): "_weight_int4pack_mm_for_cpu",
           ("cuda", "int4"): "_weight_int4pack_mm"}


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 with one scale per output row (symmetric); CPU only."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        codes = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
        scale = torch.empty(weight.shape[0], dtype=weight.dtype, device=weight.device)
        for start in range(0, weight.shape[0], ROW_BLOCK):
            block = weight[start:start + ROW_BLOCK].float()
            # Codes from the scale as stored (rounded to the model's dtype): each weight is then
            # off by at most half a step.
            block_scale = (block.abs().amax(dim=1).clamp_min(1e-12) / 127.0).to(weight.dtype)
            codes[start:start + ROW_BLOCK] = (block / block_scale.float()[:, None]).round().clamp(-128, 127)
            scale[start:start + ROW_BLOCK] = block_scale
        self.register_buffer("weight_int8", codes)
        self.register_buffer("scale", scale)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scale.to(flat.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def int4_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight's int4 codes (int32, its shape, 0..15) and its scales and zeros, (groups, rows, 2)
    bf16 as both kernels read them: w = (q - 8) * scale + zero within each group of INT4_GROUP
    input columns."""
    rows, cols = weight.shape
    codes = torch.empty(rows, cols, dtype=torch.int32, device=weight.device)
    scales_and_zeros = torch.empty(cols // INT4_GROUP, rows, 2, dtype=torch.bfloat16, device=weight.device)
    for start in range(0, rows, ROW_BLOCK):
        groups = weight[start:start + ROW_BLOCK].detach().float().reshape(-1, cols // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        # Scale and zero as the kernels read them (bf16); the codes are computed from those.
        scale = ((high - low) / 15.0).clamp_min(1e-6).to(torch.bfloat16).float()
        zero = (low + 8.0 * scale).to(torch.bfloat16).float()
        q = ((groups - zero[..., None]) / scale[..., None] + 8.0).round().clamp(0, 15)
        codes[start:start + ROW_BLOCK] = q.reshape(-1, cols)
        scales_and_zeros[:, start:start + ROW_BLOCK] = torch.stack([scale, zero], dim=-1).transpose(0, 1)
    return codes, scales_and_zeros


def nibbles(codes: torch.Tensor) -> torch.Tensor:
    """int4 codes two to a byte as the CUDA packing reads them, (rows, cols / 2) uint8: column 2j
    in the high nibble, column 2j + 1 in the low one."""
    return (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)


class Int4Linear(nn.Module):
    """A linear layer whose weight is int4 in groups of INT4_GROUP input columns (int4_codes),
    packed once, on the weight's device, for that device's kernel."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        codes, scales_and_zeros = int4_codes(linear.weight)
        if codes.is_cpu:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INT4_TILES)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles(codes), INT4_TILES)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Both kernels take contiguous bf16 activations: a no-op for a bf16 model.
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        aten = torch.ops.aten
        kernel = aten._weight_int4pack_mm_for_cpu if self.packed.is_cpu else aten._weight_int4pack_mm
        out = kernel(flat, self.packed, INT4_GROUP, self.scales_and_zeros).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


class PackedLinear(nn.Module):
    """A bf16 linear layer on a CPU whose weight is reordered once into oneDNN's blocked layout.

    Its products are bit for bit those of nn.Linear (oneDNN computes both), but the stock call
    works from the plain layout, which costs small forwards much of their time and makes their
    speed vary from one process to the next."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        # A tensor of oneDNN's own layout: not a parameter, nothing reads it but the kernel.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def can_pack(model: nn.Module) -> bool:
    """Whether pack_linears applies: a bf16 model whole on a CPU whose oneDNN has bf16 kernels."""
    parameter = next(model.parameters())
    return (parameter.dtype == torch.bfloat16 and parameter.is_cpu and not getattr(model, "hf_device_map", None)
            and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_linears(model: nn.Module) -> nn.Module:
    """Replace the model's bf16 linear layers by PackedLinear in place where can_pack; returns it."""
    if not can_pack(model):
        return model
    return replace_linears(model, lambda linear: linear.weight.dtype == torch.bfloat16, PackedLinear)


def fits(linear: nn.Linear, mode: str) -> bool:
    """Whether the layer's shape suits the mode's kernel: int4 packs 16 rows (the CPU kernel's
    blocks; the CUDA kernel's 8-row tiles divide them) and 16 * INT4_TILES columns at a time."""
    return mode == "int8" or (linear.out_features % 16 == 0 and linear.in_features % (16 * INT4_TILES) == 0)


def quantize_linears(model: nn.Module, mode: str) -> nn.Module:
    """Replace every linear layer of `model` (its output layer included, untied from the input
    embedding) by its weight-only `mode` version, in place; layers whose shape the kernel cannot
    take stay as they are. Returns the model."""
    if mode not in QUANTIZE:
        raise BadInput(f"quantize '{mode}' is not one of {', '.join(QUANTIZE)}")
    if mode == "none":
        return model
    check_kernels(mode, next(model.parameters()).device, "quantize")
    return replace_linears(model, lambda linear: fits(linear, mode), Int8Linear if mode == "int8" else Int4Linear)


def replace_linears(model: nn.Module, chosen, kind) -> nn.Module:
    """Replace every linear layer of `model` that `chosen` accepts by `kind(layer)`, in place;
    returns the model."""
    # By name, not over a list of the modules: each replaced layer's weight is freed as the next
    # is made, so a model is never held twice.
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and chosen(module)]
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child_name, kind(getattr(parent, child_name)))
    model.config.tie_word_embeddings = False  # the output layer has its own weights now
    return model


class SubVocabHead(nn.Module):
    """An output layer that scores only the `kept` token ids (`head`: a linear layer of their rows);
    every other id of the `vocab` gets -inf, so the draft's distribution, and every child it draws,
    lies inside the kept set."""

    def __init__(self, head: nn.Linear, kept: torch.Tensor, vocab: int):
        super().__init__()
        self.head, self.out_features = head, vocab
        self.register_buffer("kept", kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.head(x)
        out = torch.full((*scores.shape[:-1], self.out_features), -torch.inf, dtype=scores.dtype, device=scores.device)
        return out.index_copy_(-1, self.kept, scores)


def kept_ids(tokenizer, count: int, vocab: int) -> list[int]:
    """The `count` ids a sub-vocabulary draft keeps: every special token (EOS among them), then the
    lowest ids. A byte-level BPE tokenizer (Qwen's, Llama's, GPT-2's) numbers its tokens in the
    order its merges were learned, the most frequent pairs first, so the lowest ids are the bytes
    and the most frequent tokens of its training text: a ranking fixed by the tokenizer alone."""
    special = sorted({i for i in tokenizer.all_special_ids} | set(getattr(tokenizer, "added_tokens_decoder", {})))
    special = [i for i in special if i < vocab]
    if not len(special) < count <= vocab:
        raise BadInput(f"draft_vocab {count}: must be above the {len(special)} special tokens and at most the"
                       f" vocabulary's {vocab}", "draft_vocab")
    taken = set(special)
    rest = [i for i in range(vocab) if i not in taken][: count - len(special)]
    return sorted(special + rest)


def keep_vocab(model: nn.Module, ids: list[int]) -> nn.Module:
    """Give `model` an output layer over `ids` only (a SubVocabHead), in place; returns the model."""
    head = model.get_output_embeddings()
    kept = torch.tensor(ids, device=head.weight.device)
    rows = nn.Linear(head.in_features, len(ids), bias=head.bias is not None, device=head.weight.device,
                     dtype=head.weight.dtype)
    with torch.no_grad():
        rows.weight.copy_(head.weight[kept])
        if head.bias is not None:
            rows.bias.copy_(head.bias[kept])
    model.set_output_embeddings(SubVocabHead(rows, kept, head.out_features))
    model.config.tie_word_embeddings = False  # the input embedding keeps every row
    return model


def check_kernels(mode: str, device: torch.device, setting: str) -> None:
    """A quantization needs PyTorch's weight-only kernel for it on the device (KERNELS), and the
    CUDA int4 kernel a GPU of compute capability 8.0 or above (it runs on tensor cores)."""
    if mode == "none":
        return
    kernel = KERNELS.get((device.type, mode))
    if kernel is None:
        usable = [other for kind, other in KERNELS if kind == device.type] + ["none"]
        raise BadInput(f"{setting} {mode}: PyTorch has no weight-only {mode} kernel for {device.type}; use"
                       f" {' or '.join(usable)}", setting)
    if not hasattr(torch.ops.aten, kernel):
        raise BadInput(f"{setting} {mode}: this PyTorch ({torch.__version__}) has no {mode} kernel for"
                       f" {device.type}", setting)
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        major, minor = torch.cuda.get_device_capability(device)
        raise BadInput(f"{setting} {mode}: PyTorch's CUDA int4 kernel needs compute capability 8.0 or above, this"
                       f" GPU has {major}.{minor}; use none", setting)


def set_up(model: nn.Module, tokenizer, quantize: str, vocab: int | None) -> nn.Module:
    """Apply a model's setup in place, the sub-vocabulary first (so that its smaller output layer
    is quantized too), the packing of what stays bf16 last; returns the model."""
    if vocab is not None:
        keep_vocab(model, kept_ids(tokenizer, vocab, model.get_output_embeddings().out_features))
    return pack_linears(quantize_linears(model, quantize))
