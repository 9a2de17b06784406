"""decode: generate with a draft/target pair and a token tree, exactly as the target alone would."""

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sequoia_cli.artifacts import stats_artifact
from sequoia_cli.decoder import DecodeConfig, Decoder
from sequoia_cli.devices import input_device
from sequoia_cli.dynamic import Growth, budget_parents, growth_of
from sequoia_cli.errors import BadInput
from sequoia_cli.layout import Layout
from sequoia_cli.loading import Loaded, Resolved, describe
from sequoia_cli.mismatches import model_mismatch, setting_mismatch, width_mismatch
from sequoia_cli.models import conversation_bound, encode_prompts, eos_ids, next_turn_ids
from sequoia_cli.sampling import METHODS as TREE_METHODS
from sequoia_cli.sampling import Asked, Sampling, sampling_setting
from sequoia_cli.seeds import check_seed, prompt_generator
from sequoia_cli.tree import chain_parents, expected_tokens, ranks

# Every method runs through the same loop: the tree methods on the tree file's shape (they differ
# in how children are drawn and verified), chain on a chain of `chain_length` tokens,
# autoregressive on a tree of size 1, dynamic on a tree grown per step by the tree file's plan.
METHODS = (*TREE_METHODS, "chain", "autoregressive", "dynamic")


@dataclass(frozen=True)
class Request:
    """A decode run, checked before any model loads: the method and the tree it decodes with
    (`tree`: the tree artifact, for the tree methods), the sampling, the budget and the seed."""

    method: str
    parents: list[int]
    tree: dict | None
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    chat_template: bool = True

    @property
    def needs_draft(self) -> bool:
        return len(self.parents) > 1

    @property
    def growth(self) -> Growth | None:
        """How method dynamic grows its trees (None for the other methods, and where its plan falls
        back to the static tree)."""
        return growth_of(self.tree["dynamic"]) if self.method == "dynamic" and not falls_back(self.tree) else None


def falls_back(tree: dict) -> bool:
    """Whether a tree file's dynamic plan is predicted slower than its static tree, which decode
    --method dynamic then runs."""
    return bool(tree["dynamic"].get("fallback"))


def fallback_line(tree: dict) -> str:
    """Why a dynamic run decodes the file's static tree."""
    predicted = tree["dynamic"].get("prediction") or {}
    figures = (f" ({predicted['ms_per_token']:.1f} ms per token against {tree['plan']['ms_per_token']:.1f})"
               if predicted and tree.get("plan") else "")
    return (f"dynamic: the plan predicts grown trees slower than the file's static tree{figures}: decoding the static"
            f" tree")


def prepare(method: str, tree: dict | None, chain_length: int | None, asked: Asked, max_new_tokens: int,
            seed: int | None, chat_template: bool = True) -> Request:
    """The checked request; without a temperature and top-p `asked`, the tree's own sampling
    setting (that of its acceptance vector), else greedy; without a seed, a random one (reported)."""
    parents = method_parents(method, tree, chain_length)
    temperature, top_p = sampling_setting(asked, (tree or {}).get("source"))
    if max_new_tokens < 1:
        raise BadInput(f"max_new_tokens is {max_new_tokens}: generate at least 1 token", "max_new_tokens")
    if seed is not None:
        check_seed(seed)
    seed = random.randrange(2**31) if seed is None else seed
    return Request(method, parents, tree, temperature, top_p, max_new_tokens, seed, chat_template)


def method_parents(method: str, tree: dict | None, chain_length: int | None) -> list[int]:
    """The tree a method decodes with, from the tree artifact or the chain length it takes."""
    if method not in METHODS:
        raise BadInput(f"method '{method}' is not one of {', '.join(METHODS)}", "method")
    if method == "chain":
        if chain_length is None or chain_length < 1 or tree:
            raise BadInput("method chain takes chain_length K (K >= 1) and no tree", "method", "chain_length", "tree")
        return chain_parents(chain_length)
    if method == "dynamic":
        if not tree or chain_length:
            raise BadInput("method dynamic takes tree (a file from optimize with method dynamic) and no chain_length",
                           "method", "tree", "chain_length")
        if not tree.get("dynamic"):
            raise BadInput("the tree has no dynamic plan: make it with optimize's method dynamic (from an acceptance"
                           " file with a calibration)", "tree", "method")
        return tree["parents"] if falls_back(tree) else budget_parents(growth_of(tree["dynamic"]))
    if method == "autoregressive":
        if tree or chain_length:
            raise BadInput("method autoregressive takes no tree or chain_length", "method", "tree", "chain_length")
        return [-1]
    if not tree or chain_length:
        raise BadInput(f"method {method} takes tree (a sequoia-tree/1 file) and no chain_length",
                       "method", "tree", "chain_length")
    return tree["parents"]


def verification(method: str) -> str:
    """The verification rule of a method: a chain is verified as a tree of one child per node, a
    dynamic tree's children are drawn without replacement as Sequoia's are."""
    return "sequoia" if method in ("chain", "autoregressive", "dynamic") else method


def fits(request: Request, prompts: list) -> Callable:
    """The check `loading.load` runs before the weights load: the tree's widest node within the
    target's vocabulary, every prompt within the models' context, and every conversation (a list
    of turns) too with each of its answers as long as max_new_tokens allows."""

    def check(tokenizer, limits) -> None:
        limits.check_children(max(ranks(request.parents)), "tree")
        conversations = [turns_of(prompt) for prompt in prompts]
        encode_prompts(tokenizer, [turns[0] for turns in conversations], limits.context, request.chat_template)
        for number, turns in enumerate(conversations, start=1):
            bound = conversation_bound(tokenizer, turns, request.max_new_tokens, request.chat_template)
            if len(turns) > 1 and bound >= limits.context:
                raise BadInput(f"conversation {number}: its {len(turns)} turns with answers of max_new_tokens"
                               f" {request.max_new_tokens} could take {bound} tokens, past the models' context of"
                               f" {limits.context}", "max_new_tokens")

    return check


def turns_of(prompt) -> list[str]:
    """A prompt's turns: a conversation is a list of them, a plain prompt one."""
    return list(prompt) if isinstance(prompt, list) else [prompt]


def mismatches(request: Request, resolved: Resolved) -> list[str]:
    """What does not fit this run of the tree file, one line each: the models' setups and the
    engine it was planned for, the sampling setting and the models its vector was measured at, and
    nodes wider than its vector."""
    tree = request.tree
    if not tree:
        return []
    source = tree.get("source")
    lines = setup_mismatches(tree, resolved.setups, resolved.engine)
    lines += setting_mismatch(source, request.temperature, request.top_p)
    lines += model_mismatch(source, resolved.draft_name if request.needs_draft else None, resolved.target_name)
    if request.method in TREE_METHODS:
        lines += width_mismatch(request.parents, tree.get("acceptance"))
    return lines


def setup_mismatches(tree: dict | None, setups: dict, engine: str | None = None) -> list[str]:
    """One line per model whose setup differs from the one the tree was planned for (its
    acceptance vector's, its profile's; placement changes the speed, not the acceptance), and one
    where the run's engine is not the one its profile timed (the speeds planned for differ)."""
    if not tree:
        return []
    planned_engine = tree.get("plan", {}).get("engine")
    engine_lines = [] if engine is None or planned_engine in (None, engine) else [
        f"the tree was planned from a profile of the {planned_engine} engine; this run's engine is {engine}"]
    planned = [("an acceptance vector", tree.get("source", {}), ("quantize", "vocab")),
               ("a profile", tree.get("plan", {}), ("quantize", "vocab", "placement"))]
    lines = list(engine_lines)
    for role in ("draft", "target"):
        for origin, record, keys in planned:
            setup = record.get(f"{role}_setup")
            if setup is not None and any(setup.get(key) != setups[role].get(key) for key in keys):
                lines.append(f"the tree was planned from {origin} of the {role} at {describe(setup)};"
                             f" this run's {role} is at {describe(setups[role])}")
    return lines


def decode(request: Request, loaded: Loaded, prompts: list, show: Callable[[str], None] = lambda line: None,
           on_tokens: Callable[[list[int]], None] | None = None, progress=None) -> tuple[list[dict], dict]:
    """(one generation record per prompt, and per turn of a conversation, the run's
    sequoia-stats/1 artifact). A prompt is a text, or a conversation: a list of turns, each decoded
    after the earlier turns and the model's own answers to them (the caches carried from turn to
    turn). The first turns are encoded and checked against the models' context before any
    decoding; `show` gets the run's description line, `on_tokens` each step's new tokens, and
    `progress(description, total)` returns a callable to advance by a prompt."""
    decoder = Decoder(decode_config(request, loaded))
    sampling, layout = decoder.config.sampling, decoder.layout
    conversations = [turns_of(prompt) for prompt in prompts]
    encoded = encode_prompts(loaded.tokenizer, [turns[0] for turns in conversations], decoder.context,
                             request.chat_template)
    mode = "greedy" if sampling.greedy else f"temperature {request.temperature}, top-p {request.top_p}"
    if request.method == "dynamic" and request.growth is None:
        show(fallback_line(request.tree))
    shape = "no draft, one token per step" if layout.size == 1 else f"tree of size {layout.size}, depth {layout.depth}"
    show(f"{request.method}: {shape}; {mode}; seed {request.seed}")
    on_prompt_done = progress("decoding", len(prompts)) if progress else None
    records = []
    try:
        for record in decode_prompts(decoder, loaded.tokenizer, conversations, encoded, request.seed,
                                     request.chat_template, on_tokens, on_prompt_done):
            records.append(record)
    except KeyboardInterrupt:
        raise Interrupted(records, run_stats(records, request, loaded.resolved, layout),
                          sum(map(len, conversations))) from None
    return records, run_stats(records, request, loaded.resolved, layout)


class Interrupted(Exception):
    """A decode run stopped by an interrupt (Ctrl-C): the records it finished, their stats, and
    how many records the whole run would have made."""

    def __init__(self, records: list[dict], stats: dict, total: int):
        super().__init__(f"interrupted after {len(records)} of {total} records")
        self.records, self.stats, self.total = records, stats, total


def run_stats(records: list[dict], request: Request, resolved: Resolved, layout: Layout) -> dict:
    """The sequoia-stats/1 artifact of a run's records."""
    # A dynamic run's trees are not the file's: its predictions are of another tree.
    tree = request.tree if request.growth is None else None
    figures = summarize(records, layout, (tree or {}).get("expected_tokens"), predictions(tree, request.parents))
    return stats_artifact(figures, **run_facts(request, resolved))


def decode_config(request: Request, loaded: Loaded) -> DecodeConfig:
    """The loop's configuration of a checked request on the loaded pair."""
    sampling = Sampling(request.temperature, request.top_p, verification(request.method))
    return DecodeConfig(loaded.target, loaded.draft, request.parents, sampling, request.max_new_tokens,
                        frozenset(eos_ids(loaded.target, loaded.tokenizer)), loaded.resolved.engine, request.growth)


def run_facts(request: Request, resolved: Resolved) -> dict:
    """What a stats file records of the run beside its figures."""
    return dict(method=request.method, temperature=request.temperature, top_p=request.top_p, seed=request.seed,
                draft=resolved.draft_name, target=resolved.target_name, device=resolved.device, dtype=resolved.dtype,
                engine=resolved.engine)


def decode_prompt(decoder: Decoder, tokenizer, prompt: str, ids: list[int], generator,
                  on_tokens: Callable[[list[int]], None] | None = None, extend: bool = False) -> dict:
    """One prompt's generation record (the generations format), decoded with `generator`'s random
    stream; with `extend`, a conversation's next turn on the entries its caches hold. A run that
    records them adds each step's expected tokens (`expected`) and a dynamic tree's predicted ones
    (`predicted`)."""
    result = decoder.generate(ids, generator, on_tokens, extend)
    record = {
        "prompt": prompt, "output_ids": result.output_ids,
        "text": tokenizer.decode(result.output_ids, skip_special_tokens=True),
        "steps": len(result.accepted), "accepted": result.accepted, "seconds": result.seconds,
        "prefill_seconds": result.prefill_seconds, "step_tokens": sum(result.step_tokens),
        "prompt_tokens": len(ids), "draft_forwards": result.draft_forwards,
        "undrafted_steps": result.undrafted_steps, "stopped_by": result.stopped_by,
    }
    if decoder.config.expected:
        record["expected"] = result.expected
    if decoder.config.growth:
        record["predicted"] = result.predicted
    return record


def decode_prompts(decoder: Decoder, tokenizer, conversations: list[list[str]], encoded: list[list[int]], seed: int,
                   chat_template: bool = True, on_tokens: Callable[[list[int]], None] | None = None,
                   on_prompt_done: Callable[[], None] | None = None) -> Iterator[dict]:
    """One record per turn, in order, each as soon as it is done (a conversation's records
    numbered by `turn`); `encoded` holds the first turns' checked token ids. The prompts share the
    decoder's caches, and a conversation's turns their entries: a later turn reads only what it
    adds. A record's place in the run picks its random stream."""
    made = 0
    for turns, ids in zip(conversations, encoded):
        answers = []
        for turn, text in enumerate(turns):
            if turn:
                ids = next_turn_ids(tokenizer, turns, answers, decoder.caches.tokens, chat_template)
            generator = prompt_generator(seed, made, input_device(decoder.config.target))
            record = decode_prompt(decoder, tokenizer, text, ids, generator, on_tokens, extend=turn > 0)
            if len(turns) > 1:
                record["turn"] = turn + 1
            made += 1
            answers.append(record["text"])
            yield record
        if on_prompt_done:
            on_prompt_done()


def predictions(tree: dict | None, parents: list[int]) -> dict:
    """Tokens per step the tree file's acceptance predicts for `parents`: with the single vector
    (the paper's positional assumption) and, where the file has them, with the rows by level."""
    out = {}
    if tree and tree.get("acceptance"):
        out["predicted_positional"] = expected_tokens(parents, tree["acceptance"])
        if tree.get("acceptance_by_level"):
            out["predicted_by_level"] = expected_tokens(parents, tree["acceptance_by_level"])
    return out


def summarize(records: list[dict], layout: Layout, tree_expected: float | None,
              predicted: dict | None = None) -> dict:
    """The run's figures: speed, forwards, and realized vs predicted tokens per step."""
    tokens = sum(len(r["output_ids"]) for r in records)
    steps = sum(r["steps"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    prefill = sum(r["prefill_seconds"] for r in records)
    stepping = seconds - prefill
    drafts = sum(r["draft_forwards"] for r in records)
    return {
        "prompts": len(records), "tokens": tokens, "seconds": seconds, "prefill_seconds": prefill,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        # What the cost model predicts: the steps alone, the prompts' prefill left out.
        "step_tokens_per_second": tokens / stepping if stepping > 0 else 0.0,
        "target_forwards": steps, "draft_forwards": drafts,
        # A dynamic run's trees may stop before their first level: how much the draft did, per step.
        "draft_forwards_per_step": drafts / steps if steps else 0.0,
        "undrafted_share": sum(r["undrafted_steps"] for r in records) / steps if steps else 0.0,
        "mean_accepted": tokens / steps if steps else 0.0,
        # Before the cut at EOS or the budget: the figure the predictions are set against.
        "mean_step_tokens": sum(r["step_tokens"] for r in records) / steps if steps else 0.0,
        "expected_tokens": tree_expected, **(predicted or {}), "tree_size": layout.size, "tree_depth": layout.depth,
    }
