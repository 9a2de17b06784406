"""Reading, checking and writing the JSON artifacts that stages pass to each other.

Every artifact is one JSON object with `"format": "<kind>/<version>"`. Readers take `-` for
standard input, reject an unknown kind or a newer major version, hold every field to its kind's
schema (`schema`), and name the file and the exact fault; extra fields are kept. Writers take
`-` for standard output and never leave a partial file: a regular file is written beside the
destination, then renamed over it; a device or a FIFO is written into, never replaced.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

from sequoia_cli import schema, schema_rules
from sequoia_cli.errors import BadInput
from sequoia_cli.tree import depths

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
    """Write `text` to `path` (`-`: standard output). A regular file, or a new one, is written
    beside it and renamed over it, so that no partial file is ever seen; anything else that exists
    there (a character device such as /dev/null, a FIFO) is opened and written into, and stays
    what it is. A symbolic link stays a link: the file it points to is written."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to the file `path` as `write_text` writes text (no standard output: bytes go
    to a file)."""
    if not path:
        raise BadInput("the output path is empty: give a file name, or - for standard output")

    def cannot(err: OSError) -> BadInput:
        return BadInput(f"{path}: cannot write here ({err.strerror or err.__class__.__name__})")

    target = Path(os.path.realpath(path))
    if target.exists() and not (target.is_file() or target.is_dir()):
        try:  # renaming over a device or a FIFO would replace it with a regular file
            with open(target, "wb") as handle:
                handle.write(data)
        except OSError as err:
            raise cannot(err) from None
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise cannot(err) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, target)
    except OSError as err:  # a folder in the way, a full disk
        Path(tmp).unlink(missing_ok=True)
        raise cannot(err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | None, setting: str = "out") -> None:
    """Fail now, before long work, if `path` (the value of `setting`) could not be written later.
    Creates nothing: a regular file or a new one probes the nearest folder that exists, anything
    else there (a device, a FIFO) is asked whether it may be written."""
    if path is None or path == "-":
        return
    if not path:
        raise BadInput(f"{setting} is an empty path: give a file name, or - for standard output", setting)
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise BadInput(f"{path}: is a folder; give a file name")
    if target.exists() and not target.is_file():
        if not os.access(target, os.W_OK):
            raise BadInput(f"{path}: cannot write here (permission denied)")
        return
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


def check_format(path: str, artifact: dict, kind: str) -> None:
    """Accept `kind/1.x`; name what was found otherwise."""
    found = artifact.get("format")
    if found is None:
        raise BadInput(f"{_display(path)}: missing field 'format' (expected '{kind}/{MAJOR_VERSION}')")
    if not isinstance(found, str):
        raise BadInput(f"{_display(path)}: 'format' is {schema_rules.shown(found)}, expected '{kind}/{MAJOR_VERSION}'")
    found_kind, _, version = found.partition("/")
    if found_kind != kind:
        raise BadInput(f"{_display(path)}: format is {schema_rules.shown(found)},"
                       f" expected a '{kind}/{MAJOR_VERSION}' file")
    major = version.split(".")[0]
    if not (major.isascii() and major.isdigit()):
        raise BadInput(f"{_display(path)}: format {schema_rules.shown(found)} has no version number")
    major = major.lstrip("0") or "0"  # compared by its digits first: int() refuses thousands of them
    if len(major) > len(str(MAJOR_VERSION)) or int(major) > MAJOR_VERSION:
        raise BadInput(
            f"{_display(path)}: format {schema_rules.shown(found)} is newer than this sequoia reads "
            f"('{kind}/{MAJOR_VERSION}'): upgrade sequoia"
        )


def _check(path: str, artifact: dict, kind: str, model: type[schema_rules.Strict]) -> dict:
    """`artifact`, read from `path`, checked as a `kind` file whose fields `model` describes."""
    check_format(path, artifact, kind)
    schema_rules.check(_display(path), artifact, model)
    return artifact


def check_acceptance(path: str, artifact: dict) -> dict:
    return _check(path, artifact, ACCEPTANCE, schema.AcceptanceFile)


def check_tree(path: str, artifact: dict) -> dict:
    return _check(path, artifact, TREE, schema.TreeFile)


def check_profile(path: str, artifact: dict) -> dict:
    return _check(path, artifact, PROFILE, schema.ProfileFile)


def check_stats(path: str, artifact: dict) -> dict:
    return _check(path, artifact, STATS, schema.StatsFile)


def read_acceptance(path: str) -> dict:
    return check_acceptance(path, read_json(path))


def read_tree(path: str) -> dict:
    return check_tree(path, read_json(path))


def read_profile(path: str) -> dict:
    return check_profile(path, read_json(path))


def read_stats(path: str) -> dict:
    return check_stats(path, read_json(path))


def timings(section: dict) -> dict[int, float]:
    """A checked profile section's `ms` with integer token counts, sorted."""
    return dict(sorted((int(count), float(ms)) for count, ms in section["ms"].items()))


# ---- constructors: every artifact a stage writes is built here ----

def acceptance_artifact(mode: str, temperature: float, top_p: float, width: int, acceptance: list[float],
                        **measured) -> dict:
    """An acceptance vector measured at a setting; `measured` holds the rest (rejected_all, samples,
    stderr, the rows by level, counts, ranks, calibration and the run's facts)."""
    return {"format": format_of(ACCEPTANCE), "mode": mode, "temperature": temperature, "top_p": top_p,
            "width": width, "acceptance": acceptance, **measured}


# What an acceptance vector was measured under, carried into a tree's `source` for `decode`.
SOURCE_FIELDS = ("mode", "temperature", "top_p", "draft", "target", "dataset", "draft_setup", "target_setup")


def provenance(acceptance: dict) -> dict:
    """What an acceptance vector was measured under, carried into a tree for `decode`."""
    return {key: acceptance[key] for key in SOURCE_FIELDS if key in acceptance}


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
