"""Drawing a node's children from the draft, and verifying them against the target exactly.

Methods (how children are drawn, and the matching exact verification):
- `sequoia`: without replacement from the draft q. A rejected child's token leaves q (renormalized)
  and the target's residual becomes normalize(max(r - q, 0)).
- `specinfer`: with replacement from q (SpecInfer); q stays as is after a rejection.
- `topk`: the draft's k most likely tokens, verified as proposals of probability 1: a child is
  accepted with probability r(x), and on rejection x leaves r.
Whatever the method, the token that ends a step follows the target's distribution exactly.
Greedy decoding (temperature 0) takes the draft's top-k and accepts the target's argmax.
"""

from dataclasses import dataclass

import torch

from sequoia_cli.errors import BadInput
from sequoia_cli.setting_rules import temperature_fault, top_p_fault

METHODS = ("sequoia", "specinfer", "topk")


@dataclass(frozen=True)
class Sampling:
    """How a run samples and verifies: temperature (0: greedy) and top-p, and the method children
    are drawn and verified by."""

    temperature: float = 0.0
    top_p: float = 1.0
    method: str = "sequoia"  # sequoia | specinfer | topk

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Asked:
    """The sampling a user asked for: greedy, or a temperature and top-p (None: not given)."""

    greedy: bool = False
    temperature: float | None = None
    top_p: float | None = None


def sampling_setting(asked: Asked, default: dict | None = None) -> tuple[float, float]:
    """(temperature, top_p) as asked; with neither given, `default`'s where it is a stochastic
    setting (a tree's `source`: what its vector was measured at; a setting it leaves out is 1),
    else greedy (0, 1). Both are held to the rules of `setting_rules`, as a file's are."""
    greedy, temperature, top_p = asked.greedy, asked.temperature, asked.top_p
    if greedy and (temperature is not None or top_p is not None):
        raise BadInput("greedy takes no temperature or top_p", "greedy", "temperature", "top_p")
    if greedy:
        return 0.0, 1.0
    if temperature is None and top_p is None and default and default.get("mode") == "stochastic":
        temperature, top_p = (1.0 if default.get(name) is None else default[name] for name in ("temperature", "top_p"))
    if temperature is None:
        if top_p is not None:
            raise BadInput("top_p needs temperature (or drop it for greedy decoding)", "top_p", "temperature")
        return 0.0, 1.0
    if fault := temperature_fault(temperature):
        raise BadInput(f"temperature is {temperature!r}: {fault}", "temperature", "greedy")
    top_p = 1.0 if top_p is None else top_p
    if fault := top_p_fault(top_p):
        raise BadInput(f"top_p is {top_p!r}: {fault}", "top_p")
    return float(temperature), float(top_p)


def distribution(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sampling distribution over the last dimension after temperature and top-p (nucleus):
    keep the most likely tokens until their mass reaches top_p, the last one included."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return probs / probs.sum(dim=-1, keepdim=True)


def draw_children(q: torch.Tensor, count: int, method: str,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` children for each row of q (rows, vocab): token ids (rows, count) and which of
    them are real draws (rows, count). Without replacement a row can offer no more tokens than
    q has in its support; the rest are padding that verification skips."""
    if method == "specinfer":
        tokens = torch.multinomial(q, count, replacement=True, generator=generator)
        return tokens, torch.ones_like(tokens, dtype=torch.bool)
    if method == "topk":
        scores = q.log()
    else:
        # Gumbel-top-k: the k largest of log q + Gumbel noise are a draw of k tokens without
        # replacement, in the order sequential draws would give them.
        uniform = torch.rand(q.shape, generator=generator, device=q.device, dtype=q.dtype)
        scores = q.log() - torch.log(-torch.log(uniform.clamp_min(torch.finfo(q.dtype).tiny)))
    top_scores, tokens = scores.topk(count, dim=-1)
    return tokens, top_scores > -torch.inf


def without(dist: torch.Tensor, token) -> torch.Tensor:
    """`dist` with `token` removed, renormalized (all zeros if nothing is left). Rows at once too:
    dist (rows, vocab) and token (rows, 1)."""
    token = torch.as_tensor(token, device=dist.device).reshape(*dist.shape[:-1], 1)
    dist = dist.scatter(-1, token, 0.0)
    total = dist.sum(dim=-1, keepdim=True)
    return dist / torch.where(total > 0, total, 1.0)


def residual(target: torch.Tensor, proposal: torch.Tensor) -> torch.Tensor:
    """normalize(max(target - proposal, 0)): what the target still owes after a rejection (by
    row for rows of distributions)."""
    rest = (target - proposal).clamp_min(0.0)
    total = rest.sum(dim=-1, keepdim=True)
    # Zero mass means target == proposal, where rejection has probability 0.
    return torch.where(total > 0, rest / torch.where(total > 0, total, 1.0), target)


def verify_node(p: torch.Tensor, q: torch.Tensor, children: list[int], method: str,
                uniforms: list[float]) -> tuple[int | None, torch.Tensor, list[float]]:
    """Verify a node's children in order against the target distribution p.

    Child j is accepted when uniforms[j] < its acceptance probability. Returns the index of the
    accepted child (None if all were rejected), the target's residual distribution at that point
    (draw the step's last token from it when none was accepted), and the acceptance probability
    of each child tried, so that the outcome's exact distribution can be computed.
    """
    target, proposal = p, q
    tried = []
    for j, token in enumerate(children):
        if method == "topk":
            accept = min(1.0, float(target[token]))
        else:
            accept = min(1.0, float(target[token] / proposal[token]))
        tried.append(accept)
        if uniforms[j] < accept:
            return j, target, tried
        target = without(target, token) if method == "topk" else residual(target, proposal)
        if method == "sequoia":
            proposal = without(proposal, token)
    return None, target, tried


def sample(dist: torch.Tensor, generator: torch.Generator) -> int:
    return int(torch.multinomial(dist, 1, generator=generator))
