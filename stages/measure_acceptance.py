"""measure-acceptance: how often the draft's k-th child is the one the target accepts.

For each prompt, a continuation (the target's own generation at the same temperature, or a
reference text) is read once by each model. At every continuation position the draft's
distribution proposes `width` children (without replacement; greedy: its top-k) and the very
verification code of `decode` says which rank, if any, the target accepts.
"""

import math

import torch

from sequoia_cli.artifacts import acceptance_artifact
from sequoia_cli.engine import Sampling, fit_vocab, generate, prompt_generator, tree_layout
from sequoia_cli.models import encode_prompt, eos_ids
from sequoia_cli.sampling import distribution, draw_children, verify_node

DEPTHS_TRACKED = 8


def accepted_ranks(target_logits: torch.Tensor, draft_logits: torch.Tensor, sampling: Sampling, width: int,
                   generator: torch.Generator) -> list[int]:
    """For each row (position), the rank (1..width) of the accepted child, 0 if none."""
    if sampling.greedy:
        best = target_logits.argmax(dim=-1, keepdim=True)
        hits = draft_logits.topk(width, dim=-1).indices == best
        return torch.where(hits.any(dim=-1), hits.int().argmax(dim=-1) + 1, 0).tolist()
    p = distribution(target_logits.float(), sampling.temperature, sampling.top_p)
    q = distribution(draft_logits.float(), sampling.temperature, sampling.top_p)
    children, real = draw_children(q, width, sampling.method, generator)
    ranks = []
    for row in range(len(p)):
        kids = children[row][real[row]].tolist()
        uniforms = torch.rand(len(kids), generator=generator, device=p.device).tolist()
        chosen, _, _ = verify_node(p[row], q[row], kids, sampling.method, uniforms)
        ranks.append(0 if chosen is None else chosen + 1)
    return ranks


def run_lengths(ranks: list[int]) -> list[int]:
    """Depth of each position in a run of accepted positions: 1 after a rejection, 2 after one
    acceptance, ... (capped), to test the positional assumption that depth does not matter."""
    depths, run = [], 0
    for rank in ranks:
        depths.append(min(run + 1, DEPTHS_TRACKED))
        run = run + 1 if rank else 0
    return depths


def _logits(model, ids: list[int], start: int, vocab: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
    return fit_vocab(out[start - 1:len(ids) - 1].float(), vocab)  # row j predicts ids[start + j]


def measure_acceptance(target, draft, tokenizer, records: list[dict], sampling: Sampling, width: int,
                       continuation_tokens: int, seed: int, chat_template: bool = True,
                       use_reference: bool = False, on_prompt_done=None, run: dict | None = None) -> dict:
    """A sequoia-acceptance/1 artifact: the vector and its by-depth breakdown, plus the `run`
    fields given (models, data set, device, ...)."""
    vocab = target.get_output_embeddings().out_features
    counts = torch.zeros(DEPTHS_TRACKED, width + 1, dtype=torch.long)  # [depth - 1, rank], rank 0 = none
    stop = eos_ids(target, tokenizer)
    outside = positions = 0
    for index, record in enumerate(records):
        generator = prompt_generator(seed, index, target.device)
        prompt_ids = encode_prompt(tokenizer, record["prompt"], chat_template)
        if use_reference and record.get("reference"):
            continuation = tokenizer(record["reference"], add_special_tokens=False)["input_ids"][:continuation_tokens]
        else:
            continuation = generate(target, None, prompt_ids, tree_layout([-1], target.device), sampling,
                                    continuation_tokens, stop, generator).output_ids
        ids = prompt_ids + continuation
        draft_logits = _logits(draft, ids, len(prompt_ids), vocab)
        ranks = accepted_ranks(_logits(target, ids, len(prompt_ids), vocab), draft_logits, sampling, width, generator)
        for depth, rank in zip(run_lengths(ranks), ranks):
            counts[depth - 1, rank] += 1
        # Tokens the draft cannot propose (outside a sub-vocabulary draft's ids).
        continued = torch.tensor(continuation, device=draft_logits.device)
        outside += int(torch.isneginf(draft_logits[torch.arange(len(continuation)), continued]).sum())
        positions += len(continuation)
        if on_prompt_done:
            on_prompt_done()
    return acceptance_of(counts, sampling, width, prompts=len(records), continuation_tokens=continuation_tokens,
                         seed=seed, outside_draft_vocab=outside / positions if positions else 0.0, **(run or {}))


def acceptance_of(counts: torch.Tensor, sampling: Sampling, width: int, **run) -> dict:
    """The artifact of counts[depth - 1, rank] (rank 0: none accepted)."""
    total = counts.sum(dim=0)
    samples = int(total.sum())
    acceptance = [int(c) / samples if samples else 0.0 for c in total[1:]]
    by_depth = counts.sum(dim=1)
    return acceptance_artifact(
        "greedy" if sampling.greedy else "stochastic", sampling.temperature, sampling.top_p, width, acceptance,
        rejected_all=int(total[0]) / samples if samples else 1.0, samples=samples,
        stderr=[math.sqrt(a * (1 - a) / samples) if samples else 0.0 for a in acceptance],
        # Row d: acceptance by rank at positions that follow d accepted ones (the last row: or more).
        acceptance_by_depth=[[int(c) / int(n) for c in row[1:]] if n else None for row, n in zip(counts, by_depth)],
        samples_by_depth=by_depth.tolist(), **run)
