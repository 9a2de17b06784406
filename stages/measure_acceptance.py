"""measure-acceptance: how often the draft's k-th child is the one the target accepts.

For each prompt, a continuation (the target's own generation at the same temperature, or a
reference text) is read once by each model. At every continuation position the draft's
distribution proposes `width` children (without replacement; greedy: its top-k) and the very
verification code of `decode` says which rank, if any, the target accepts.

Each position also has a level: 1 right after a rejection, l after l - 1 accepted positions (the
last level standing for every deeper one): the counts by level and rank give `acceptance_by_level`,
and shards merge exactly from them. The accepted rank at every position is kept too (`ranks`):
walked down by a tree, they give the rows that tree meets in decode (`sequoia_cli.levels`), which
build-tree and optimize plan with.
"""

import torch

from sequoia_cli.artifacts import acceptance_from_counts
from sequoia_cli.engine import Sampling, fit_vocab, generate, input_device, prompt_generator, tree_layout
from sequoia_cli.levels import LEVELS
from sequoia_cli.models import encode_prompt, eos_ids
from sequoia_cli.sampling import distribution, draw_children, verify_node


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


def measure_acceptance(target, draft, tokenizer, records: list[dict], sampling: Sampling, width: int,
                       continuation_tokens: int, seed: int, chat_template: bool = True,
                       use_reference: bool = False, on_prompt_done=None, run: dict | None = None,
                       shard: tuple[int, int] = (0, 1)) -> dict:
    """A sequoia-acceptance/1 artifact: the vector, its rows by level, the counts and the ranks, plus the
    `run` fields given (models, data set, device, ...). `shard` (I, N) measures the prompts
    I, I + N, I + 2N, ... only, each with the random stream it has in the whole run."""
    vocab = target.get_output_embeddings().out_features
    counts = torch.zeros(LEVELS, width + 1, dtype=torch.long)  # [level - 1, rank], rank 0 = none
    stop = eos_ids(target, tokenizer)
    outside = positions = 0
    ranks_by_prompt = {}
    part, parts = shard
    for index, record in enumerate(records):
        if index % parts != part:
            continue
        generator = prompt_generator(seed, index, input_device(target))
        prompt_ids = encode_prompt(tokenizer, record["prompt"], chat_template)
        if use_reference and record.get("reference"):
            continuation = tokenizer(record["reference"], add_special_tokens=False)["input_ids"][:continuation_tokens]
        else:
            continuation = generate(target, None, prompt_ids, tree_layout([-1], input_device(target)), sampling,
                                    continuation_tokens, stop, generator).output_ids
        ids = prompt_ids + continuation
        draft_logits = _logits(draft, ids, len(prompt_ids), vocab)
        ranks = accepted_ranks(_logits(target, ids, len(prompt_ids), vocab), draft_logits, sampling, width, generator)
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
                                  prompts=len(range(part, len(records), parts)), continuation_tokens=continuation_tokens,
                                  seed=seed, outside_draft_vocab=outside / positions if positions else 0.0,
                                  ranks=ranks_by_prompt,
                                  **({"shard": f"{part}/{parts}"} if parts > 1 else {}), **(run or {}))
