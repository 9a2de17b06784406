"""What every artifact kind holds: each field's type, range and shape, and the rules between
fields, as pydantic models (one per kind and one per nested object).

`check` holds a parsed artifact to its kind's model and words the first fault as one line that
names the file and the field (`acc.json: 'acceptance[1]' is '0.1', not a number`). Validation is
strict: a number is never read from a string, nor `true` as 1, and every number is finite. A field
a file leaves out keeps its meaning: the readers return the file's own dict, extra fields
included, and take their defaults where they always did. The bounds keep every figure within what
a run can produce and every loop over a file's contents within sane work; the sampling settings
follow the very rules of the command line (`setting_rules`).
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, TypedDict  # pydantic reads typing's TypedDict only from 3.12

from sequoia_cli.errors import BadInput
from sequoia_cli.setting_rules import temperature_fault, top_p_fault
from sequoia_cli.tree import MAX_TREE_SIZE, check_parents, depths, expected_tokens

MAX_WIDTH = 1024  # children per node: the entries of an acceptance vector
MAX_LEVELS = 32  # rows by level: measure-acceptance writes 4, and each row is a pass of the DP
MAX_MS = 86_400_000  # a day: no forward takes as long
MAX_SECONDS = 366 * 86_400  # a year: no decode run takes as long
MAX_COUNT = 2**53  # positions, tokens, forwards: whole numbers that a float still counts exactly
MAX_POSITIONS = 10**6  # measured ranks in one file: each planning round walks them all (about a second)
MAX_CANDIDATES = 2**20  # the (size, depth) candidates of an optimize plan
MAX_TIMINGS = 1024  # token counts in a profile (profile-hw times about 20): the optimizer reads each per candidate
MAX_RATE = 10**9  # tokens per second: far past any machine
MAX_SEED = 2**63 - 1  # what a random generator takes
MAX_VOCAB = 2**31 - 1  # token ids are 32-bit integers
MAX_BINS = 1024  # calibration bins: a dynamic tree looks each child's bin up among them

Probability = Annotated[float, Field(ge=0, le=1)]
Vector = Annotated[list[Probability], Field(min_length=1, max_length=MAX_WIDTH)]
Rows = Annotated[list[Vector], Field(min_length=1, max_length=MAX_LEVELS)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Positive = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Milliseconds = Annotated[float, Field(gt=0, lt=MAX_MS)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
Rate = Annotated[float, Field(ge=0, le=MAX_RATE)]
PerStep = Annotated[float, Field(ge=0, le=MAX_COUNT)]  # tokens per step as measured
TreeSize = Annotated[int, Field(ge=1, le=MAX_TREE_SIZE)]
Depth = Annotated[int, Field(ge=0, lt=MAX_TREE_SIZE)]
Expected = Annotated[float, Field(ge=1, le=MAX_TREE_SIZE)]  # a tree's expected tokens per step
Speedup = Annotated[float, Field(gt=0)]
Rank = Annotated[int, Field(ge=0, le=MAX_WIDTH)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

TOKEN_COUNT = r"^[1-9][0-9]{0,6}$"
TokenCount = Annotated[str, Field(pattern=TOKEN_COUNT)]
PROMPT_INDEX = r"^(0|[1-9][0-9]{0,8})$"
SHARD = r"^(0|[1-9][0-9]{0,8})/[1-9][0-9]{0,8}$"
PATTERN_WORDS = {
    TOKEN_COUNT: "token counts are integers >= 1 (up to 9999999)",
    PROMPT_INDEX: "prompt indices are integers >= 0",
    SHARD: "give I/N with 0 <= I < N, e.g. 0/4",
}
LIMIT_WORDS = {MAX_MS: f"{MAX_MS} (a day)", MAX_SECONDS: f"{MAX_SECONDS} (a year)"}


# How forwards ran (kv.ENGINES); a file from before engines has none, and ran eager.
Engine = Literal["eager", "static", "cuda-graphs"]


class Strict(BaseModel):
    """JSON's own types (no number from a string, no `true` as 1), finite numbers; fields this
    version does not know are left to the file's dict. A field declared `= None` may be left out;
    given, it holds its type (null only where the type says so)."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


def fault(words: str, *fields: str) -> PydanticCustomError:
    """A broken rule between fields: `words`, where {0}, {1}, ... stand for the `fields` it names
    (as the checking object names them; the message names them from the artifact's top)."""
    return PydanticCustomError("sequoia", "{words}", {"words": words, "fields": fields})


def setting_fault(temperature: float | None, top_p: float | None, greedy: bool) -> PydanticCustomError | None:
    """The sampling setting a file records, held to the command line's rules (`setting_rules`); a greedy
    record may say temperature 0."""
    said_greedy = greedy and temperature == 0
    if temperature is not None and not said_greedy and (words := temperature_fault(temperature)):
        return fault(f"{{0}} is {shown(temperature)}: {words}", "temperature")
    if top_p is not None and (words := top_p_fault(top_p)):
        return fault(f"{{0}} is {shown(top_p)}: {words}", "top_p")
    return None


def sum_fault(vector: list[float], name: str) -> PydanticCustomError | None:
    """An acceptance vector sums to at most 1 (the rest: none accepted)."""
    total = sum(vector)
    return fault(f"{{0}} sums to {total:.6f} > 1", name) if total > 1.0 + 1e-6 else None


def vectors_fault(vector: list[float] | None, rows: list[list[float]] | None) -> PydanticCustomError | None:
    """The first of an artifact's `acceptance` and its `acceptance_by_level` rows that sums past 1."""
    named = ([(vector, "acceptance")] if vector else []) + [
        (row, f"acceptance_by_level[{level}]") for level, row in enumerate(rows or [])]
    return next((error for row, name in named if (error := sum_fault(row, name))), None)


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


def check(where: str, artifact: dict, model: type[Strict]) -> None:
    """Hold `artifact` (read from `where`) to `model`; the first fault is a BadInput of one line."""
    try:
        model.model_validate(artifact)
    except ValidationError as err:
        raise BadInput(f"{where}: {words(err.errors(include_url=False)[0])}") from None


# The words for pydantic's error types that say what a value is not.
NOT = {"float_type": "not a number", "int_type": "not an integer", "string_type": "not a string",
       "bool_type": "not true or false", "list_type": "not a list", "dict_type": "not an object",
       "model_type": "not an object", "finite_number": "not a finite number"}
BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def words(error: dict) -> str:
    """One pydantic error in a person's words, naming the field from the artifact's top."""
    loc, kind, value, context = error["loc"], error["type"], error.get("input"), error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        return f"'{field_name(loc[:-2])}' has key {shown(loc[-2])}: {PATTERN_WORDS[context['pattern']]}"
    name = field_name(loc)
    if kind == "sequoia":
        message = context["words"]
        for index, field in enumerate(context["fields"]):
            message = message.replace(f"{{{index}}}", f"'{name}.{field}'" if name else f"'{field}'")
        return message
    if kind == "missing":
        return f"missing field '{name}'"
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        return f"'{name}' is {shown(value)}: too large a number"  # an integer past the floats
    if kind in NOT:
        return f"'{name}' is {shown(value)}, {NOT[kind]}"
    if kind in BOUNDS:
        limit = next(iter(context.values()))
        if kind == "greater_than" and limit == 0:
            return f"'{name}' is {shown(value)}: it must be positive"
        return f"'{name}' is {shown(value)}: it must be {BOUNDS[kind]} {LIMIT_WORDS.get(limit, limit)}"
    if kind == "too_short":
        return f"'{name}' is empty" if not context.get("actual_length") else \
            f"'{name}' has {entries(context['actual_length'])}, fewer than {context['min_length']}"
    if kind == "too_long":
        return f"'{name}' has {entries(context['actual_length'])}, more than the {context['max_length']} sequoia reads"
    if kind == "literal_error":
        return f"'{name}' is {shown(value)}, expected {context['expected']}"
    if kind == "string_pattern_mismatch":
        return f"'{name}' is {shown(value)}: {PATTERN_WORDS[context['pattern']]}"
    return f"'{name}' is {shown(value)}: {error['msg'][:1].lower()}{error['msg'][1:]}"


def field_name(loc: tuple) -> str:
    """`acceptance[1]`, `target.ms.2`, `ranks[0][5]` (a prompt index reads as an index)."""
    name = ""
    for index, part in enumerate(loc):
        if isinstance(part, int) or (index and loc[index - 1] == "ranks"):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name


def shown(value) -> str:
    """A value as a message shows it: as JSON writes it, a long one summarized."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        digits = len(str(abs(value)))
        return str(value) if digits <= 24 else f"an integer of {digits} digits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"{value[:32]!r}... ({len(value)} characters)"
    if isinstance(value, list):
        return f"a list of {entries(len(value))}"
    if isinstance(value, dict):
        return f"an object of {len(value)} field{'s' if len(value) != 1 else ''}"
    return repr(value)


def entries(count: int) -> str:
    """`count` entries in words: 1 entry, 3 entries."""
    return f"{count} entr{'ies' if count != 1 else 'y'}"
