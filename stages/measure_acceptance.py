"""measure-acceptance: how often the draft's k-th child is the one the target accepts.

For each prompt, a continuation (the target's own generation at the same temperature, or a
reference text) is read once by each model. At every continuation position the draft's
distribution proposes `width` children (without replacement; greedy: its top-k) and the very
verification code of `decode` says which rank, if any, the target accepts. The draft's probability
of each child that verification tried, and whether it was accepted, are counted by bin of that
probability: the calibration a dynamic tree grows by.

Each position also has a level: 1 right after a rejection, l after l - 1 accepted positions (the
last level standing for every deeper one): the counts by level and rank give `acceptance_by_level`,
and shards merge exactly from them. The accepted rank at every position is kept too (`ranks`):
walked down by a tree, they give the rows that tree meets in decode (`sequoia_cli.acceptance`), which
build-tree and optimize plan with.
"""

from dataclasses import dataclass

import torch

from sequoia_cli.acceptance import CALIBRATION_EDGES, LEVELS, acceptance_from_counts, calibration_from_counts
from sequoia_cli.decoder import DecodeConfig, Decoder
from sequoia_cli.devices import context_length, input_device
from sequoia_cli.errors import BadInput
from sequoia_cli.kv import fit_vocab
from sequoia_cli.loading import Limits, Loaded
from sequoia_cli.models import encode_prompt, eos_ids
from sequoia_cli.sampling import Asked, Sampling, distribution, draw_children, sampling_setting, verify_node
from sequoia_cli.schema_rules import MAX_WIDTH
from sequoia_cli.seeds import check_seed, prompt_generator


@dataclass(frozen=True)
class Request:
    """A measurement, checked before any model loads: the prompts' records, the sampling, the
    children per position, the continuation per prompt, and the shard (I, N) of the prompts."""

    records: list[dict]
    sampling: Sampling
    width: int
    continuation_tokens: int
    seed: int
    chat_template: bool = True
    use_reference: bool = False
    shard: tuple[int, int] = (0, 1)

    @property
    def prompt_count(self) -> int:
        """The prompts this shard measures."""
        part, parts = self.shard
        return len(range(part, len(self.records), parts))


def prepare(records: list[dict], asked: Asked, width: int, continuation_tokens: int, seed: int,
            chat_template: bool = True, use_reference: bool = False, shard: str | None = None) -> Request:
    """The checked request; `shard` is "I/N" (None: every prompt)."""
    temperature, top_p = sampling_setting(asked)
    if not 1 <= width <= MAX_WIDTH:
        raise BadInput(f"width is {width}: draw 1 to {MAX_WIDTH} children", "width")
    if continuation_tokens < 1:
        raise BadInput(f"continuation_tokens is {continuation_tokens}: use at least 1", "continuation_tokens")
    check_seed(seed)
    part, parts = shard_of(shard)
    if part >= len(records):
        raise BadInput(f"shard {shard}: the data has only {len(records)} prompts", "shard")
    return Request(records, Sampling(temperature, top_p), width, continuation_tokens, seed, chat_template,
                   use_reference, (part, parts))


def shard_of(text: str | None) -> tuple[int, int]:
    """(I, N) of a shard "I/N"; (0, 1) for None."""
    if text is None:
        return 0, 1
    part, _, parts = text.partition("/")
    plain = all(number.isascii() and number.isdigit() and len(number) <= 18 for number in (part, parts))
    if not (plain and int(part) < int(parts)):
        raise BadInput(f"shard '{text}': give I/N with 0 <= I < N, e.g. 0/4", "shard")
    return int(part), int(parts)


def fitted_prompts(request: Request, tokenizer, limits: Limits) -> dict[int, tuple[list[int], list[int] | None]]:
    """{prompt index: (its token ids, those of its reference continuation, None where the target
    generates it)} of the request's shard, checked against what the models serve: `width` children
    within the target's vocabulary, every prompt with its continuation within their context. A
    measurement calls it before any decoding; the command, before the weights load."""
    limits.check_children(request.width, "width")
    part, parts = request.shard
    fitted = {}
    for index in range(part, len(request.records), parts):
        record = request.records[index]
        prompt = encode_prompt(tokenizer, record["prompt"], request.chat_template)
        reference = None
        if request.use_reference and record.get("reference"):
            reference = tokenizer(record["reference"], add_special_tokens=False)["input_ids"]
            reference = reference[:request.continuation_tokens]
        continuation = request.continuation_tokens if reference is None else len(reference)
        if not prompt:
            raise BadInput(f"prompt {index + 1} is empty")
        if len(prompt) + continuation > limits.context:
            raise BadInput(f"prompt {index + 1} has {len(prompt)} tokens: with {continuation} tokens of continuation,"
                           f" past the models' context of {limits.context} (shorten it, or lower continuation_tokens)",
                           "continuation_tokens")
        fitted[index] = (prompt, reference)
    return fitted


def measure(request: Request, loaded: Loaded, dataset: str, progress=None) -> dict:
    """The acceptance artifact of `request` on the loaded pair, recording the models, their
    setups and the data set (`dataset`: as the user named it); `progress(description, total)`
    returns a callable to advance by a prompt."""
    on_prompt_done = progress("measuring", request.prompt_count) if progress else None
    resolved = loaded.resolved
    run = dict(draft=resolved.draft_name, target=resolved.target_name, dataset=dataset, device=resolved.device,
               dtype=resolved.dtype, draft_setup=resolved.setups["draft"], target_setup=resolved.setups["target"])
    return measure_acceptance(loaded.target, loaded.draft, loaded.tokenizer, request, on_prompt_done, run,
                              resolved.engine)


@dataclass(frozen=True)
class Verified:
    """What verification did at each position (row): the rank (1..width) of the accepted child, 0
    if none; the draft's probability of each child, in the order they were verified (rows, width);
    and which of them it tried (rows, width): the accepted one and those before it, or every real
    child where none was accepted."""

    ranks: list[int]
    probabilities: torch.Tensor
    tried: torch.Tensor


def verify_positions(target_logits: torch.Tensor, draft_logits: torch.Tensor, sampling: Sampling, width: int,
                     generator: torch.Generator) -> Verified:
    """Each position's children verified as decode verifies them. Greedy: the draft's top-k in
    order, the target's argmax accepted, the probabilities a softmax of the draft's logits (the
    draft's own, at temperature 1); sampled: the children drawn from the draft's distribution at
    the setting, which also gives their probabilities."""
    if sampling.greedy:
        best = target_logits.argmax(dim=-1, keepdim=True)
        top = draft_logits.topk(width, dim=-1)
        hits = top.indices == best
        ranks = torch.where(hits.any(dim=-1), hits.int().argmax(dim=-1) + 1, 0)
        reached = torch.where(ranks > 0, ranks, width).unsqueeze(-1)
        tried = torch.arange(width, device=ranks.device) < reached
        probabilities = (top.values - draft_logits.logsumexp(dim=-1, keepdim=True)).exp()  # softmax, top-k only
        return Verified(ranks.tolist(), probabilities, tried)
    p = distribution(target_logits.float(), sampling.temperature, sampling.top_p)
    q = distribution(draft_logits.float(), sampling.temperature, sampling.top_p)
    children, real = draw_children(q, width, sampling.method, generator)
    ranks, reached = [], []
    for row in range(len(p)):
        kids = children[row][real[row]].tolist()
        uniforms = torch.rand(len(kids), generator=generator, device=p.device).tolist()
        chosen, _, checked = verify_node(p[row], q[row], kids, sampling.method, uniforms)
        ranks.append(0 if chosen is None else chosen + 1)
        reached.append(len(checked))
    return Verified(ranks, q.gather(-1, children), torch.arange(width) < torch.tensor(reached).unsqueeze(-1))


def calibration_counts(verified: Verified, edges: torch.Tensor) -> torch.Tensor:
    """[tried, accepted]: the children per bin [edges[i], edges[i + 1]) of their draft probability (the
    last bin closed at 1), counted on the host in float64 (the edges' precision, which not every
    device has)."""
    bins = len(edges) - 1
    tried = verified.tried.cpu()
    accepted = torch.arange(tried.shape[-1]) == torch.tensor(verified.ranks).unsqueeze(-1) - 1
    binned = torch.bucketize(verified.probabilities.cpu().double(), edges[1:-1], right=True)
    return torch.stack([torch.bincount(binned[chosen], minlength=bins) for chosen in (tried, accepted)])


def run_lengths(ranks: list[int]) -> list[int]:
    """The level of each position: 1 after a rejection, 2 after one acceptance, ... (capped at
    LEVELS)."""
    levels, run = [], 0
    for rank in ranks:
        levels.append(min(run + 1, LEVELS))
        run = run + 1 if rank else 0
    return levels


def _logits(model, ids: list[int], start: int, vocab: int) -> torch.Tensor:
    with torch.inference_mode():
        device = input_device(model)
        out = model(input_ids=torch.tensor([ids], device=device)).logits[0].to(device)
    return fit_vocab(out[start - 1:len(ids) - 1].float(), vocab)  # row j predicts ids[start + j]


def measure_acceptance(target, draft, tokenizer, request: Request, on_prompt_done=None,
                       run: dict | None = None, engine: str = "eager") -> dict:
    """A sequoia-acceptance/1 artifact: the vector, its rows by level, the counts, the ranks and the
    calibration, plus the `run` fields given (models, data set, device, ...). The request's shard
    (I, N) measures the prompts I, I + N, I + 2N, ... only, each with the random stream it has in
    the whole run. The target's own continuations are generated with `engine`'s forwards."""
    sampling, width, seed = request.sampling, request.width, request.seed
    continuation_tokens, part, parts = request.continuation_tokens, *request.shard
    vocab = target.get_output_embeddings().out_features
    fitted = fitted_prompts(request, tokenizer, Limits(min(context_length(target), context_length(draft)), vocab))
    counts = torch.zeros(LEVELS, width + 1, dtype=torch.long)  # [level - 1, rank], rank 0 = none
    edges = torch.tensor(CALIBRATION_EDGES, dtype=torch.float64)
    calibration = torch.zeros(2, len(edges) - 1, dtype=torch.long)  # [tried, accepted] children per bin
    stop = eos_ids(target, tokenizer)
    outside = positions = 0
    ranks_by_prompt = {}
    # The target's own continuations, its cache reused from prompt to prompt.
    generating = Decoder(DecodeConfig(target, None, [-1], sampling, continuation_tokens, frozenset(stop), engine))
    for index, (prompt_ids, continuation) in fitted.items():
        generator = prompt_generator(seed, index, input_device(target))
        if continuation is None:
            continuation = generating.generate(prompt_ids, generator).output_ids
        ids = prompt_ids + continuation
        draft_logits = _logits(draft, ids, len(prompt_ids), vocab)
        verified = verify_positions(_logits(target, ids, len(prompt_ids), vocab), draft_logits, sampling, width,
                                    generator)
        ranks = verified.ranks
        calibration += calibration_counts(verified, edges)
        for level, rank in zip(run_lengths(ranks), ranks):
            counts[level - 1, rank] += 1
        ranks_by_prompt[str(index)] = ranks
        # Tokens the draft cannot propose (outside a sub-vocabulary draft's ids).
        continued = torch.tensor(continuation, device=draft_logits.device)
        outside += int(torch.isneginf(draft_logits[torch.arange(len(continuation)), continued]).sum())
        positions += len(continuation)
        if on_prompt_done:
            on_prompt_done()
    mode = "greedy" if sampling.greedy else "stochastic"
    return acceptance_from_counts(counts.tolist(), mode, sampling.temperature, sampling.top_p, width,
                                  prompts=len(fitted),
                                  continuation_tokens=continuation_tokens,
                                  seed=seed, outside_draft_vocab=outside / positions if positions else 0.0,
                                  ranks=ranks_by_prompt,
                                  calibration=calibration_from_counts(CALIBRATION_EDGES, *calibration.tolist()),
                                  **({"shard": f"{part}/{parts}"} if parts > 1 else {}), **(run or {}))
