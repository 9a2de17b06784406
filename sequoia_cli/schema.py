"""What every artifact kind holds: each field's type, range and shape, and the rules between
fields, as pydantic models (one per kind and one per nested object), on the ground rules of
`schema_rules` (`check` holds a file to its kind's model). A field a file leaves out keeps its
meaning: the readers return the file's own dict, extra fields included, and take their defaults
where they always did.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator
from typing_extensions import NotRequired, TypedDict  # pydantic reads typing's TypedDict only from 3.12

from sequoia_cli.schema_rules import (
    MAX_BINS,
    MAX_CANDIDATES,
    MAX_LEVELS,
    MAX_MS,
    MAX_POSITIONS,
    MAX_TIMINGS,
    MAX_VOCAB,
    MAX_WIDTH,
    PATTERN_WORDS,
    PROMPT_INDEX,
    SHARD,
    Count,
    Depth,
    Engine,
    Expected,
    Milliseconds,
    PerStep,
    Positive,
    Probability,
    Rank,
    Rate,
    Rows,
    Seconds,
    Seed,
    Speedup,
    Strict,
    TokenCount,
    TreeSize,
    Vector,
    entries,
    fault,
    setting_fault,
    shown,
    vectors_fault,
)
from sequoia_cli.tree import MAX_TREE_SIZE, check_parents, depths, expected_tokens


class Setup(Strict):
    """A model's setup as an acceptance vector, a profile or a plan records it."""

    quantize: str = None
    vocab: Annotated[int, Field(ge=1, le=MAX_VOCAB)] | None = None
    placement: dict | None = None


class Calibration(Strict):
    """Children verification tried and accepted per bin [edges[i], edges[i + 1]) of their draft
    probability (the last bin closed at 1), with each bin's acceptance and its standard error (null
    for an empty bin), as `acceptance.calibration_from_counts` writes them."""

    edges: Annotated[list[Probability], Field(min_length=2, max_length=MAX_BINS + 1)]
    tried: Annotated[list[Count], Field(max_length=MAX_BINS)]
    accepted: Annotated[list[Count], Field(max_length=MAX_BINS)]
    acceptance: Annotated[list[Probability | None], Field(max_length=MAX_BINS)]
    stderr: Annotated[list[Probability | None], Field(max_length=MAX_BINS)]

    @model_validator(mode="after")
    def rules(self):
        if self.edges[0] != 0 or self.edges[-1] != 1:
            raise fault(f"{{0}} runs from {self.edges[0]} to {self.edges[-1]}: the bins cover 0 to 1", "edges")
        for index, (low, high) in enumerate(zip(self.edges, self.edges[1:]), start=1):
            if high <= low:
                raise fault(f"{{0}} is {high}, not past {low}: edges increase strictly", f"edges[{index}]")
        bins = len(self.edges) - 1
        for name in ("tried", "accepted", "acceptance", "stderr"):
            if len(getattr(self, name)) != bins:
                raise fault(f"{{0}} has {entries(len(getattr(self, name)))}, but the {len(self.edges)} entries of {{1}}"
                            f" make {bins} bins", name, "edges")
        for index, (tried, accepted) in enumerate(zip(self.tried, self.accepted)):
            if accepted > tried:
                raise fault(f"{{0}} is {accepted}, more than the {tried} of {{1}}", f"accepted[{index}]",
                            f"tried[{index}]")
            rate = accepted / tried if tried else None
            expected = {"acceptance": rate, "stderr": (rate * (1 - rate) / tried) ** 0.5 if tried else None}
            for name, value in expected.items():
                given = getattr(self, name)[index]
                if (given is None) != (value is None) or (value is not None and abs(given - value) > 1e-6):
                    said = "null (an empty bin)" if value is None else f"{value:.6f}"
                    raise fault(f"{{0}} is {shown(given)}, but {{1}} and {{2}} make {said}", f"{name}[{index}]",
                                f"accepted[{index}]", f"tried[{index}]")
        return self


class AcceptanceFile(Strict):
    """sequoia-acceptance/1 (see docs/design.md, Artifacts)."""

    mode: Literal["greedy", "stochastic"]
    acceptance: Vector
    temperature: float | None = None
    top_p: float | None = None
    width: Annotated[int, Field(ge=1, le=MAX_WIDTH)] = None
    rejected_all: Probability = None
    samples: Count = None
    stderr: Annotated[list[Probability], Field(max_length=MAX_WIDTH)] = None
    draft: str | None = None
    target: str | None = None
    dataset: str | None = None
    acceptance_by_level: Rows = None
    samples_by_level: Annotated[list[Count], Field(max_length=MAX_LEVELS)] = None
    stderr_by_level: Annotated[list[Annotated[list[Probability], Field(max_length=MAX_WIDTH)]],
                               Field(max_length=MAX_LEVELS)] = None
    counts: Annotated[list[Annotated[list[Count], Field(min_length=2, max_length=MAX_WIDTH + 1)]],
                      Field(min_length=1, max_length=MAX_LEVELS)] = None
    ranks: Annotated[dict[Annotated[str, Field(pattern=PROMPT_INDEX)],
                          Annotated[list[Rank], Field(max_length=MAX_POSITIONS)]],
                     Field(max_length=MAX_POSITIONS)] = None
    shard: Annotated[str, Field(pattern=SHARD)] = None
    prompts: Count = None
    continuation_tokens: Positive = None
    seed: Seed = None
    device: str = None
    dtype: str = None
    draft_setup: Setup | None = None
    target_setup: Setup | None = None
    outside_draft_vocab: Probability = None
    calibration: Calibration = None

    @model_validator(mode="after")
    def rules(self):
        total = sum(self.acceptance)
        if error := vectors_fault(self.acceptance, self.acceptance_by_level):
            raise error
        if error := setting_fault(self.temperature, self.top_p, self.mode == "greedy"):
            raise error
        if self.rejected_all is not None and abs(self.rejected_all + total - 1.0) > 1e-4:
            raise fault(f"{{0}} {self.rejected_all} and {{1}} (sum {total:.6f}) do not add to 1",
                        "rejected_all", "acceptance")
        width = len(self.acceptance) if self.width is None else self.width
        if width < len(self.acceptance):
            raise fault(f"{{0}} is {width} but {{1}} has {len(self.acceptance)} entries", "width", "acceptance")
        for level, row in enumerate(self.counts or []):
            if len(row) != width + 1:
                said = f"{{1}} {width} makes" if self.width is not None else f"the {width} entries of {{1}} make"
                raise fault(f"{{0}} has {len(row)} entries, but {said} {width + 1} (none accepted, then ranks"
                            f" 1..{width})", f"counts[{level}]", "width" if self.width is not None else "acceptance")
        if self.ranks:
            if sum(map(len, self.ranks.values())) > MAX_POSITIONS:
                raise fault(f"{{0}} holds more than {MAX_POSITIONS} positions", "ranks")
            for prompt, row in self.ranks.items():
                if row and max(row) > width:
                    position = next(i for i, rank in enumerate(row) if rank > width)
                    raise fault(f"{{0}} is {row[position]}: expected a rank 0..{width}",
                                f"ranks[{prompt}][{position}]")
        if self.calibration is not None and self.counts is not None:
            # Every position with an accepted rank accepted one child, whose probability has a bin.
            accepted = sum(sum(row[1:]) for row in self.counts)
            if sum(self.calibration.accepted) != accepted:
                raise fault(f"{{0}} sums to {sum(self.calibration.accepted)}, but {{1}} has {accepted} accepted"
                            " positions", "calibration.accepted", "counts")
        if self.shard is not None:
            part, parts = map(int, self.shard.split("/"))
            if part >= parts:
                raise fault(f"{{0}} is '{self.shard}': {PATTERN_WORDS[SHARD]}", "shard")
        return self


class Source(Strict):
    """What a tree's acceptance vector was measured under: decode samples with it by default."""

    mode: Literal["greedy", "stochastic"] = None
    temperature: float | None = None
    top_p: float | None = None
    draft: str | None = None
    target: str | None = None
    dataset: str | None = None
    draft_setup: Setup | None = None
    target_setup: Setup | None = None

    @model_validator(mode="after")
    def rules(self):
        if error := setting_fault(self.temperature, self.top_p, self.mode != "stochastic"):
            raise error
        return self


class Candidate(TypedDict):
    """A plan has thousands: a typed dict validates several times faster than a model."""

    __pydantic_config__ = Strict.model_config
    size: TreeSize
    depth: Depth
    expected_tokens: Expected
    step_ms: Milliseconds
    speedup: Speedup
    ms_per_token: NotRequired[Milliseconds]


class Plan(Strict):
    size: TreeSize = None
    depth: Depth = None
    speedup: Speedup = None
    ms_per_token: Milliseconds = None
    step_ms: Milliseconds = None
    autoregressive_ms_per_token: Milliseconds = None
    draft_counted: bool = None
    device: str | None = None
    dtype: str | None = None
    engine: Engine = None
    draft_setup: Setup | None = None
    target_setup: Setup | None = None
    candidates: Annotated[list[Candidate], Field(max_length=MAX_CANDIDATES)] = None


Timings = Annotated[dict[TokenCount, Milliseconds], Field(min_length=1, max_length=MAX_TIMINGS)]


class GrowthPrediction(Strict):
    """What the plan predicts of its grown trees (`dynamic_plan.Prediction`)."""

    tokens_per_step: Expected
    ms_per_token: Milliseconds
    draft_forwards_per_step: Annotated[float, Field(ge=0, le=MAX_LEVELS)]
    undrafted_share: Probability
    speedup: Speedup


class Dynamic(Strict):
    """A tree file's plan for dynamic trees (optimize --method dynamic; `dynamic.Growth`): the most
    nodes per level, the children drawn per node, the chance a reached node has one accepted, what
    a token is worth, the forward times, and the draft's calibration; from optimize also its
    predicted figures and whether decode runs the static tree instead (`fallback`)."""

    widths: Annotated[list[Annotated[int, Field(ge=1, lt=MAX_TREE_SIZE)]], Field(min_length=1, max_length=MAX_LEVELS)]
    children: Annotated[int, Field(ge=1, le=MAX_WIDTH)]
    gain: Probability
    token_ms: Milliseconds
    target_ms: Timings
    draft_ms: Timings
    calibration: Calibration
    prediction: GrowthPrediction = None
    fallback: bool = None

    @model_validator(mode="after")
    def rules(self):
        if sum(self.widths) + 1 > MAX_TREE_SIZE:
            raise fault(f"{{0}} sum to {sum(self.widths)}: a tree has at most {MAX_TREE_SIZE} nodes", "widths")
        for name in ("target_ms", "draft_ms"):
            if "1" not in getattr(self, name):
                raise fault("{0} has no timing for 1 token", name)
        return self


class TreeFile(Strict):
    """sequoia-tree/1."""

    parents: Annotated[list[Annotated[int, Field(ge=-1, lt=MAX_TREE_SIZE)]],
                       Field(min_length=1, max_length=MAX_TREE_SIZE)]
    size: TreeSize
    depth: Depth
    expected_tokens: Expected = None
    acceptance: Vector = None
    acceptance_by_level: Rows = None
    planned_by: Literal["level", "positional"] = None
    source: Source = None
    plan: Plan = None
    dynamic: Dynamic = None

    @model_validator(mode="after")
    def rules(self):
        try:
            check_parents(self.parents)
        except ValueError as err:
            raise fault(str(err)) from None
        if self.size != len(self.parents):
            raise fault(f"{{0}} is {self.size} but {{1}} has {len(self.parents)} nodes", "size", "parents")
        depth = max(depths(self.parents))
        if self.depth != depth:
            raise fault(f"{{0}} is {self.depth} but the tree in {{1}} has depth {depth}", "depth", "parents")
        if self.plan is not None:
            for name, value in (("size", self.size), ("depth", self.depth)):
                if getattr(self.plan, name) not in (None, value):
                    raise fault(f"{{0}} is {getattr(self.plan, name)} but the tree's {{1}} is {value}",
                                f"plan.{name}", name)
        if error := vectors_fault(self.acceptance, self.acceptance_by_level):
            raise error
        if self.acceptance and self.expected_tokens is not None:
            used = "acceptance_by_level" if self.planned_by == "level" and self.acceptance_by_level else "acceptance"
            actual = expected_tokens(self.parents, getattr(self, used))
            if abs(self.expected_tokens - actual) > 1e-6 * max(1.0, actual):
                raise fault(f"{{0}} is {self.expected_tokens} but the tree and {{1}} give {actual:.6f}",
                            "expected_tokens", used)
        return self


class Section(Strict):
    """One model's timings in a profile."""

    model: str | None = None
    ms: Annotated[dict[TokenCount, Milliseconds], Field(min_length=1, max_length=MAX_TIMINGS)]
    # The interquartile range over rounds of each count's time.
    spread: Annotated[dict[TokenCount, Annotated[list[Annotated[float, Field(ge=0, lt=MAX_MS)]],
                                                 Field(min_length=2, max_length=2)]],
                      Field(max_length=MAX_TIMINGS)] = None
    setup: Setup | None = None

    @model_validator(mode="after")
    def rules(self):
        if "1" not in self.ms:
            raise fault("{0} has no timing for 1 token", "ms")
        return self


class ProfileFile(Strict):
    """sequoia-profile/1."""

    context_length: Count
    target: Section
    draft: Section | None = None
    device: str = None
    dtype: str = None
    engine: Engine = None
    torch: str = None
    gpu: str = None
    threads: Positive = None
    repeats: Positive = None
    warmup: Count = None
    burst: Positive = None
    target_t1_by_round: Annotated[list[Milliseconds], Field(min_length=1, max_length=MAX_POSITIONS)] = None
    steady: bool = None


class StatsFile(Strict):
    """sequoia-stats/1."""

    tokens_per_second: Rate
    mean_accepted: PerStep
    prompts: Count = None
    tokens: Count = None
    seconds: Seconds = None
    prefill_seconds: Seconds = None
    step_tokens_per_second: Rate = None
    target_forwards: Count = None
    draft_forwards: Count = None
    draft_forwards_per_step: PerStep = None
    undrafted_share: Probability = None
    mean_step_tokens: PerStep = None
    expected_tokens: Expected | None = None
    predicted_positional: Expected = None
    predicted_by_level: Expected = None
    tree_size: Positive = None
    tree_depth: Count = None
    method: str = None
    temperature: float | None = None
    top_p: float | None = None
    seed: Seed = None
    draft: str | None = None
    target: str = None
    device: str = None
    dtype: str = None
    engine: Engine = None

    @model_validator(mode="after")
    def rules(self):
        if error := setting_fault(self.temperature, self.top_p, greedy=True):
            raise error
        return self
