"""The ground rules every artifact kind's schema (`schema.py`) is built from: the bounds of each
figure, the field types, the strict base model, the faults between fields, and `check`, which
holds a parsed artifact to its kind's model and words the first fault as one line that names the
file and the field (`acc.json: 'acceptance[1]' is '0.1', not a number`). Validation is strict: a
number is never read from a string, nor `true` as 1, and every number is finite. The bounds keep
every figure within what a run can produce and every loop over a file's contents within sane
work; the sampling settings follow the very rules of the command line (`setting_rules`).
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from sequoia_cli.errors import BadInput
from sequoia_cli.setting_rules import MAX_SEED, temperature_fault, top_p_fault
from sequoia_cli.tree import MAX_TREE_SIZE

MAX_WIDTH = 1024  # children per node: the entries of an acceptance vector
MAX_LEVELS = 32  # rows by level: measure-acceptance writes 4, and each row is a pass of the DP
MAX_MS = 86_400_000  # a day: no forward takes as long
MAX_SECONDS = 366 * 86_400  # a year: no decode run takes as long
MAX_COUNT = 2**53  # positions, tokens, forwards: whole numbers that a float still counts exactly
MAX_POSITIONS = 10**6  # measured ranks in one file: each planning round walks them all (about a second)
MAX_CANDIDATES = 2**20  # the (size, depth) candidates of an optimize plan
MAX_TIMINGS = 1024  # token counts in a profile (profile-hw times about 20): the optimizer reads each per candidate
MAX_RATE = 10**9  # tokens per second: far past any machine
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
