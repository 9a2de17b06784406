"""export-tree and import-tree: a sequoia tree to and from other engines' files (`interchange`)."""

import io
import json
import pickle
import sys
from pathlib import Path

from sequoia_cli import artifacts, interchange
from sequoia_cli.acceptance import planning_acceptance, rows_met
from sequoia_cli.errors import BadInput, one_line
from sequoia_cli.tree import depths, expected_tokens

FORMATS = ("eagle-choices", "growmap", "growmap-json")


def check_export(format: str, out: str) -> None:
    """Refuse, before any work, a format sequoia does not write and a torch file to standard output."""
    if format not in FORMATS:
        raise BadInput(f"format '{format}' is not one of {', '.join(FORMATS)}", "format")
    if format == "growmap" and out == "-":
        raise BadInput("format growmap is a binary torch file: give out FILE.pt, not standard output",
                       "format", "out")


def export_tree(tree: dict, format: str) -> str | bytes:
    """A checked sequoia-tree/1 in `format`: JSON text, or the bytes torch.save writes."""
    parents = tree["parents"]
    if format == "eagle-choices":
        return json.dumps(interchange.eagle_choices(parents)) + "\n"
    if format == "growmap-json":
        return json.dumps(interchange.as_lists(interchange.growmap(parents))) + "\n"
    import torch  # slow to import: only for the format that needs it

    growmap = interchange.growmap(parents)
    buffer = io.BytesIO()
    torch.save({**growmap, "mask": torch.from_numpy(growmap["mask"]), "depth": torch.from_numpy(growmap["depth"])},
               buffer)
    return buffer.getvalue()


def read_bytes(path: str) -> bytes:
    """The bytes of `path` (`-`: standard input)."""
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as err:
        raise BadInput(f"{path}: cannot read: {err.strerror or err.__class__.__name__}") from None


def is_torch_file(path: str, data: bytes) -> bool:
    """A `.pt` name, or the start of a zip archive (torch.save) or of a pickle (older torch)."""
    return path.endswith(".pt") or data.startswith((b"PK\x03\x04", b"\x80"))


def load_growmap(path: str, data: bytes):
    """What torch.load reads from `data` with weights_only: tensors and plain values, no code.
    Tensors come back as numpy arrays."""
    import torch

    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only" in str(err):
            raise BadInput(f"{path}: refused: loading it would run code, and sequoia loads only tensors and plain"
                           " values (torch.load weights_only)") from None
        raise BadInput(f"{path}: not a torch file ({one_line(err)})") from None
    except Exception as err:  # torch.load raises anything from EOFError to RuntimeError on a file it cannot read
        raise BadInput(f"{path}: not a torch file ({one_line(err)})") from None
    if isinstance(loaded, dict):
        return {key: value.numpy() if isinstance(value, torch.Tensor) else value for key, value in loaded.items()}
    return loaded


def read_json_value(path: str, data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{path}: neither a torch file nor UTF-8 JSON") from None
    except json.JSONDecodeError as err:
        raise BadInput(f"{path}: not valid JSON ({err.msg} at line {err.lineno}) nor a torch file") from None
    except (ValueError, RecursionError) as err:
        raise BadInput(f"{path}: not a JSON file sequoia reads ({str(err).splitlines()[0]})") from None


def import_tree(path: str, acceptance: dict | None = None) -> dict:
    """The sequoia-tree/1 of a growmap (`.pt` or JSON) or an eagle-choices JSON list, told apart by
    their content; with an acceptance artifact, rated as build-tree rates its own trees."""
    data = read_bytes(path)
    if is_torch_file(path, data):
        parents = interchange.parents_from_growmap(load_growmap(path, data), path)
    else:
        value = read_json_value(path, data)
        if isinstance(value, list):
            parents = interchange.parents_from_choices(value, path)
        else:
            parents = interchange.parents_from_growmap(value, path)
    if acceptance is None:
        tree = {"format": artifacts.format_of(artifacts.TREE), "parents": parents, "size": len(parents),
                "depth": max(depths(parents))}
    else:
        rows = rows_met(parents, acceptance) if acceptance.get("ranks") else planning_acceptance(acceptance)
        tree = artifacts.tree_artifact(parents, acceptance, expected_tokens(parents, rows), rows=rows)
    return artifacts.check_tree(path, tree)
