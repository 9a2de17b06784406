"""The built-in model pairs (`configs/*.yaml`, shipped inside the package) and the cache folders
that `fetch-models` fills: `<cache>/models/<pair>/<role>/`, with a marker file written last."""

import json
import os
from pathlib import Path

import yaml

from sequoia_cli.errors import BadInput, SetupError

ROLES = ("target", "draft")
MODEL_KEYS = ("name", "license", "gguf", "size", "sha256", "packages")
MARKER = "sequoia-complete.json"
# A model's default setup on every device, then what a device type changes of it.
SETUP_KEYS = ("setup", "setup_cpu", "setup_cuda")


def configs_dir() -> Path:
    """The built-in pair files: inside an installed package (a wheel carries them as the package
    data of `sequoia_cli.configs`), else the source tree's top-level configs/, their one source."""
    installed = Path(__file__).resolve().parent / "configs"
    return installed if installed.is_dir() else installed.parent.parent / "configs"


def pair_names() -> list[str]:
    names = sorted(path.stem for path in configs_dir().glob("*.yaml"))
    if not names:
        raise SetupError(f"no model pair configs in {configs_dir()}: this sequoia installation is incomplete")
    return names


def pair_config(name: str) -> dict:
    known = pair_names()
    if name not in known:
        raise BadInput(f"unknown model pair '{name}': known pairs are {', '.join(known)}")
    path = configs_dir() / f"{name}.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise BadInput(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    check_pair_config(config, path)
    return config


def check_pair_config(config, path: Path) -> None:
    from sequoia_cli.quantize import QUANTIZE  # torch, only once a config is read

    if not isinstance(config, dict):
        raise BadInput(f"{path}: expected a mapping with 'target' and 'draft'")
    for role in ROLES:
        model = config.get(role)
        if not isinstance(model, dict):
            raise BadInput(f"{path}: missing '{role}' section")
        missing = [key for key in MODEL_KEYS if key not in model]
        if missing:
            raise BadInput(f"{path}: '{role}' lacks {', '.join(missing)}")
        packages = model["packages"]
        if not packages or not all(isinstance(pin, str) and "==" in pin for pin in packages):
            raise BadInput(f"{path}: '{role}.packages' must be a list of 'name==version' pins")
        unknown = [key for key in model if str(key).startswith("setup") and key not in SETUP_KEYS]
        if unknown:
            raise BadInput(f"{path}: '{role}.{unknown[0]}' is not a setup: a model's setups are"
                           f" {', '.join(SETUP_KEYS)}")
        allowed = {"quantize", "vocab"} if role == "draft" else {"quantize"}
        for key in SETUP_KEYS:
            setup = model.get(key, {})
            if not isinstance(setup, dict) or set(setup) - allowed:
                raise BadInput(f"{path}: '{role}.{key}' may set only {', '.join(sorted(allowed))}")
            if setup.get("quantize", "none") not in QUANTIZE:
                raise BadInput(f"{path}: '{role}.{key}.quantize' is not one of {', '.join(QUANTIZE)}")
            if "vocab" in setup and not (isinstance(setup["vocab"], int) and setup["vocab"] > 0):
                raise BadInput(f"{path}: '{role}.{key}.vocab' must be a positive integer")


def cache_dir() -> Path:
    return Path(os.environ.get("SEQUOIA_CACHE") or Path.home() / ".cache" / "sequoia")


def model_folder(pair: str, role: str) -> Path:
    """Where the fetched model lives, complete or not."""
    return cache_dir() / "models" / pair / role


def model_dir(pair: str, role: str) -> Path:
    """The fetched model's folder; an error says how to get it when it is missing or incomplete."""
    pair_config(pair)
    folder = model_folder(pair, role)
    if not folder.exists():
        raise BadInput(f"model pair '{pair}' is not fetched yet: run `sequoia fetch-models {pair}`")
    if not is_complete(folder):
        raise BadInput(f"corrupt cache at {folder}: delete it and run `sequoia fetch-models {pair}`")
    return folder


def is_complete(folder: Path) -> bool:
    try:
        files = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((folder / name).is_file() for name in files)
