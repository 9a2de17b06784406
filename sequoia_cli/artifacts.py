"""Reading, checking and writing the JSON artifacts that stages pass to each other.

Every artifact is one JSON object with `"format": "<kind>/<version>"`. Readers take `-` for
standard input, reject an unknown kind or a newer major version, and name the file and the exact
fault; extra fields are kept. Writers take `-` for standard output and never leave a partial
file: they write beside the destination, then rename.
"""

import json
import math
import os
import sys
import tempfile
from pathlib import Path

from sequoia_cli.errors import BadInput
from sequoia_cli.tree import check_parents, depths, expected_tokens

ACCEPTANCE = "sequoia-acceptance"
TREE = "sequoia-tree"
TABLE = "sequoia-tree-table"
PROFILE = "sequoia-profile"
STATS = "sequoia-stats"
MAJOR_VERSION = 1


def format_of(kind: str) -> str:
    return f"{kind}/{MAJOR_VERSION}"


def _display(path: str) -> str:
    return "<stdin>" if path == "-" else str(path)


def read_json(path: str) -> dict:
    """The JSON object in `path` (`-`: standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: cannot read: {err.__class__.__name__}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{_display(path)}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, RecursionError) as err:  # an integer of thousands of digits; nesting past the stack
        raise BadInput(f"{_display(path)}: not a JSON file sequoia reads ({str(err).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise BadInput(f"{_display(path)}: expected a JSON object, found {type(value).__name__}")
    return value


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (`-`: standard output)."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise BadInput(f"{path}: cannot write here ({err.strerror or err.__class__.__name__})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, target)
    except OSError as err:  # a folder in the way, a full disk
        Path(tmp).unlink(missing_ok=True)
        raise BadInput(f"{path}: cannot write here ({err.strerror or err.__class__.__name__})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | None) -> None:
    """Fail now, before long work, if `path` could not be written later. Creates nothing: it
    probes the nearest folder that exists."""
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise BadInput(f"{path}: is a folder; give a file name")
    folder = target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise BadInput(f"{path}: cannot write here ({folder} is a file)")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".sequoia-probe-")
    except OSError as err:
        raise BadInput(f"{path}: cannot write here ({err.strerror or err.__class__.__name__})") from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str, artifact: dict) -> None:
    write_text(path, json.dumps(artifact, indent=1) + "\n")


def write_jsonl(path: str, records: list[dict]) -> None:
    """One JSON line per record (decode's generations)."""
    write_text(path, "".join(json.dumps(record) + "\n" for record in records))


class _Checker:
    """Field checks that name the file and the field in the error."""

    def __init__(self, path: str, artifact: dict):
        self.where = _display(path)
        self.artifact = artifact

    def fail(self, fault: str):
        raise BadInput(f"{self.where}: {fault}")

    def field(self, name: str, obj: dict | None = None, prefix: str = ""):
        obj = self.artifact if obj is None else obj
        if name not in obj:
            self.fail(f"missing field '{prefix}{name}'")
        return obj[name]

    def number(self, value, name: str, low: float = -math.inf, high: float = math.inf) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"'{name}' is {value!r}, not a number")
        if not math.isfinite(value):
            self.fail(f"'{name}' is {value}, not a finite number")
        if not low <= value <= high:
            self.fail(f"'{name}' is {value}, outside [{low}, {high}]")
        return value

    def integer(self, value, name: str, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"'{name}' is {value!r}, not an integer")
        if value < low:
            self.fail(f"'{name}' is {value}, must be >= {low}")
        return value

    def number_list(self, value, name: str, low: float = -math.inf, high: float = math.inf) -> list:
        if not isinstance(value, list) or not value:
            self.fail(f"'{name}' must be a non-empty list of numbers")
        return [self.number(x, f"{name}[{i}]", low, high) for i, x in enumerate(value)]


def check_format(path: str, artifact: dict, kind: str) -> None:
    """Accept `kind/1.x`; name what was found otherwise."""
    found = artifact.get("format")
    if found is None:
        raise BadInput(f"{_display(path)}: missing field 'format' (expected '{kind}/{MAJOR_VERSION}')")
    found_kind, _, version = str(found).partition("/")
    if found_kind != kind:
        raise BadInput(f"{_display(path)}: format is '{found}', expected a '{kind}/{MAJOR_VERSION}' file")
    major = version.split(".")[0]
    if not (major.isascii() and major.isdigit()):
        raise BadInput(f"{_display(path)}: format '{found}' has no version number")
    if int(major) > MAJOR_VERSION:
        raise BadInput(
            f"{_display(path)}: format '{found}' is newer than this sequoia reads "
            f"('{kind}/{MAJOR_VERSION}'): upgrade sequoia"
        )


def check_acceptance(path: str, artifact: dict) -> dict:
    check_format(path, artifact, ACCEPTANCE)
    check = _Checker(path, artifact)
    acceptance = check.number_list(check.field("acceptance"), "acceptance", 0.0, 1.0)
    if sum(acceptance) > 1.0 + 1e-6:
        check.fail(f"'acceptance' sums to {sum(acceptance):.6f} > 1")
    mode = check.field("mode")
    if mode not in ("greedy", "stochastic"):
        check.fail(f"'mode' is {mode!r}, expected 'greedy' or 'stochastic'")
    if "rejected_all" in artifact:
        rejected_all = check.number(artifact["rejected_all"], "rejected_all", 0.0, 1.0)
        if abs(rejected_all + sum(acceptance) - 1.0) > 1e-4:
            check.fail(f"'rejected_all' {rejected_all} and 'acceptance' (sum {sum(acceptance):.6f}) do not add to 1")
    if "width" in artifact and check.integer(artifact["width"], "width", 1) < len(acceptance):
        check.fail(f"'width' is {artifact['width']} but 'acceptance' has {len(acceptance)} entries")
    for name in ("temperature", "top_p"):
        if artifact.get(name) is not None:
            check.number(artifact[name], name, 0.0)
    if "acceptance_by_level" in artifact:
        _check_rows(check, artifact["acceptance_by_level"], "acceptance_by_level")
    if "counts" in artifact:
        counts = artifact["counts"]
        if not isinstance(counts, list) or not counts or not all(isinstance(row, list) for row in counts):
            check.fail("'counts' must be a non-empty list of rows (by level) of counts by rank")
        for level, row in enumerate(counts):
            if len(row) != len(counts[0]):
                check.fail(f"'counts[{level}]' has {len(row)} entries, 'counts[0]' {len(counts[0])}")
            for rank, count in enumerate(row):
                check.integer(count, f"counts[{level}][{rank}]")
    if "ranks" in artifact:
        _check_ranks(check, artifact["ranks"], artifact.get("width", len(acceptance)))
    return artifact


def _check_ranks(check: _Checker, ranks, width: int) -> None:
    """{prompt index: [accepted rank per position, 0..width]}."""
    if not isinstance(ranks, dict):
        check.fail("'ranks' must be an object: prompt index -> list of accepted ranks")
    for prompt, row in ranks.items():
        if not (prompt.isascii() and prompt.isdigit()) or not isinstance(row, list):
            check.fail(f"'ranks' must map prompt indices to lists of ranks (found {prompt!r})")
        for position, rank in enumerate(row):
            if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= width:
                check.fail(f"'ranks[{prompt}][{position}]' is {rank!r}: expected a rank 0..{width}")


def _check_rows(check: _Checker, rows, name: str) -> list[list[float]]:
    """Acceptance rows by level: each a vector (entries in [0, 1], sum <= 1)."""
    if not isinstance(rows, list) or not rows:
        check.fail(f"'{name}' must be a non-empty list of acceptance vectors, one per level")
    for level, row in enumerate(rows):
        check.number_list(row, f"{name}[{level}]", 0.0, 1.0)
        if sum(row) > 1.0 + 1e-6:
            check.fail(f"'{name}[{level}]' sums to {sum(row):.6f} > 1")
    return rows


def check_tree(path: str, artifact: dict) -> dict:
    check_format(path, artifact, TREE)
    check = _Checker(path, artifact)
    parents = check.field("parents")
    if not isinstance(parents, list):
        check.fail("'parents' must be a list of integers")
    try:
        check_parents(parents)
    except ValueError as err:
        check.fail(str(err))
    size = check.integer(check.field("size"), "size", 1)
    if size != len(parents):
        check.fail(f"'size' is {size} but 'parents' has {len(parents)} nodes")
    depth = check.integer(check.field("depth"), "depth", 0)
    if depth != max(depths(parents)):
        check.fail(f"'depth' is {depth} but the tree in 'parents' has depth {max(depths(parents))}")
    if "acceptance_by_level" in artifact:
        _check_rows(check, artifact["acceptance_by_level"], "acceptance_by_level")
    if "acceptance" in artifact:
        check.number_list(artifact["acceptance"], "acceptance", 0.0, 1.0)
        if "expected_tokens" in artifact:
            stated = check.number(artifact["expected_tokens"], "expected_tokens", 1.0)
            by_level = artifact.get("planned_by") == "level" and "acceptance_by_level" in artifact
            actual = expected_tokens(parents, artifact["acceptance_by_level"] if by_level else artifact["acceptance"])
            if abs(stated - actual) > 1e-6 * max(1.0, actual):
                used = "acceptance_by_level" if by_level else "acceptance"
                check.fail(f"'expected_tokens' is {stated} but the tree and '{used}' give {actual:.6f}")
    return artifact


def _check_timings(check: _Checker, timings, name: str) -> None:
    if not isinstance(timings, dict) or not timings:
        check.fail(f"'{name}' must be a non-empty object mapping token counts to milliseconds")
    counts = set()
    for count, ms in timings.items():
        if not (str(count).isascii() and str(count).isdigit()) or int(count) < 1:
            check.fail(f"'{name}' has key {count!r}: token counts are integers >= 1")
        counts.add(int(count))
        if check.number(ms, f"{name}.{count}", 0.0) <= 0:
            check.fail(f"'{name}.{count}' is {ms}: a forward takes a positive time")
    if 1 not in counts:
        check.fail(f"'{name}' has no timing for 1 token")


def check_profile(path: str, artifact: dict) -> dict:
    check_format(path, artifact, PROFILE)
    check = _Checker(path, artifact)
    check.integer(check.field("context_length"), "context_length", 0)
    for role in ("target", "draft"):
        if role == "draft" and artifact.get("draft") is None:
            continue
        section = check.field(role)
        if not isinstance(section, dict):
            check.fail(f"'{role}' must be an object with 'model' and 'ms'")
        _check_timings(check, check.field("ms", section, f"{role}."), f"{role}.ms")
    return artifact


def read_acceptance(path: str) -> dict:
    return check_acceptance(path, read_json(path))


def read_tree(path: str) -> dict:
    return check_tree(path, read_json(path))


def read_profile(path: str) -> dict:
    return check_profile(path, read_json(path))


def timings(section: dict) -> dict[int, float]:
    """A checked profile section's `ms` with integer token counts, sorted."""
    return dict(sorted((int(count), float(ms)) for count, ms in section["ms"].items()))


def check_stats(path: str, artifact: dict) -> dict:
    check_format(path, artifact, STATS)
    check = _Checker(path, artifact)
    check.number(check.field("tokens_per_second"), "tokens_per_second", 0.0)
    check.number(check.field("mean_accepted"), "mean_accepted", 0.0)
    return artifact


def read_stats(path: str) -> dict:
    return check_stats(path, read_json(path))


# ---- constructors: every artifact a stage writes is built here ----

def acceptance_artifact(mode: str, temperature: float, top_p: float, width: int, acceptance: list[float],
                        rejected_all: float, samples: int, stderr: list[float], **extra) -> dict:
    return {"format": format_of(ACCEPTANCE), "mode": mode, "temperature": temperature, "top_p": top_p,
            "width": width, "acceptance": acceptance, "rejected_all": rejected_all, "samples": samples,
            "stderr": stderr, **extra}


def provenance(acceptance: dict) -> dict:
    """What an acceptance vector was measured under, carried into a tree for `decode`."""
    keys = ("mode", "temperature", "top_p", "draft", "target", "dataset", "draft_setup", "target_setup")
    return {key: acceptance[key] for key in keys if key in acceptance}


def tree_artifact(parents: list[int], acceptance: dict, expected: float, positional: bool = False,
                  plan: dict | None = None, rows: list | None = None) -> dict:
    """A tree planned from the acceptance artifact `acceptance` (and, from optimize, a `plan`):
    `planned_by` says whether its `expected_tokens` come from the rows by level (`rows`, those the
    tree meets, else the artifact's) or the one vector; both are carried, so that decode can set
    what it measures beside either prediction."""
    tree = {"format": format_of(TREE), "parents": parents, "size": len(parents), "depth": max(depths(parents)),
            "expected_tokens": expected, "acceptance": acceptance["acceptance"], "source": provenance(acceptance)}
    by_level = rows if rows and isinstance(rows[0], list) else acceptance.get("acceptance_by_level")
    if by_level:
        tree["acceptance_by_level"] = by_level
    tree["planned_by"] = "positional" if positional or "acceptance_by_level" not in tree else "level"
    if plan is not None:
        tree["plan"] = plan
    return tree


def table_artifact(acceptance: list[float], expected: list[list[float | None]]) -> dict:
    """The DP's whole table: expected[d][n] is the best expected tokens with n nodes and depth <= d
    (null: no such tree; column 0 unused)."""
    return {"format": format_of(TABLE), "acceptance": acceptance, "max_size": len(expected[0]) - 1,
            "max_depth": len(expected) - 1, "expected": expected}


def profile_artifact(machine: dict, context_length: int, repeats: int, warmup: int, sections: dict,
                     **extra) -> dict:
    """`sections`: {"target": {"model", "ms"}, "draft": {...}} with ms keyed by token count."""
    return {"format": format_of(PROFILE), **machine, "context_length": context_length, "repeats": repeats,
            "warmup": warmup, **extra, **sections}


def stats_artifact(figures: dict, **run) -> dict:
    return {"format": format_of(STATS), **figures, **run}
