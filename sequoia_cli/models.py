"""Loading draft and target models: names, devices, dtypes, tokenizers, prompts, EOS."""

import json
import os
import pickle
import tempfile

import torch

from sequoia_cli.errors import BadInput, one_line
from sequoia_cli.kv import check_tree_attention
from sequoia_cli.pairs import model_dir, pair_names

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def device_of(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"device '{name}' is not a device (cpu, cuda, cuda:N)", "device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {name}: no CUDA device is available here (use cpu)", "device")
    if device.type not in ("cpu", "cuda"):
        raise BadInput(f"device '{name}' is not supported (cpu, cuda, cuda:N)", "device")
    return device


def dtype_of(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise BadInput(f"dtype '{name}' is not one of {', '.join(DTYPES)}", "dtype")
    return DTYPES[name]


DEVICE_MAPS = ("auto", "balanced", "sequential")


def placement_of(device_map: str | None, max_memory: str | None, offload_folder: str | None) -> dict | None:
    """The target's placement across devices, CPU memory and disk, from `device_map`, `max_memory`
    and `offload_folder`, checked (None: the whole model on one device). Handed to accelerate
    through `from_pretrained`; recorded in the artifacts as given."""
    if device_map is None and max_memory is None and offload_folder is None:
        return None
    placement = {"device_map": device_map or "auto"}
    if placement["device_map"] not in DEVICE_MAPS:
        placement["device_map"] = _device_map_file(placement["device_map"])
    if max_memory is not None:
        placement["max_memory"] = _max_memory(max_memory)
    if offload_folder is not None:
        try:
            os.makedirs(offload_folder, exist_ok=True)
            tempfile.TemporaryFile(dir=offload_folder).close()
        except OSError as err:
            raise BadInput(f"offload_folder {offload_folder} cannot be written: {err.strerror or err}",
                           "offload_folder") from None
        placement["offload_folder"] = os.path.abspath(offload_folder)
    return placement


def _placement_device(name, setting: str, disk: bool = False) -> str | int:
    """A device as accelerate names it: 'cpu', 'disk' (where allowed) or a GPU's index."""
    text = str(name)
    if text == "cpu" or (disk and text == "disk"):
        return text
    index = text.removeprefix("cuda:") if text.startswith("cuda:") else "0" if text == "cuda" else text
    if not index.isdigit():
        raise BadInput(f"{setting}: unknown device '{text}' (cpu, cuda:N{', disk' if disk else ''})", setting)
    if int(index) >= torch.cuda.device_count():
        raise BadInput(f"{setting}: device '{text}' is not here ({torch.cuda.device_count()} CUDA devices)", setting)
    return int(index)


def _max_memory(text: str) -> dict:
    from accelerate.utils import convert_file_size_to_int

    limits = {}
    for part in text.split(","):
        device, _, size = part.partition("=")
        try:
            valid = bool(size) and convert_file_size_to_int(size.strip()) > 0
        except ValueError:
            valid = False
        if not valid:
            raise BadInput(f"max_memory '{part}': give DEVICE=SIZE, e.g. cpu=1GiB,cuda:0=20GiB", "max_memory")
        _placement_device(device.strip(), "max_memory")
        limits[device.strip()] = size.strip()
    return limits


def _device_map_file(path: str) -> dict:
    try:
        with open(path) as handle:
            mapping = json.load(handle)
    except OSError as err:
        raise BadInput(f"device_map {path}: not auto, balanced or sequential, and cannot be read"
                       f" ({err.strerror or err})", "device_map") from None
    except json.JSONDecodeError as err:
        raise BadInput(f"device_map {path}: not valid JSON ({err.msg}, line {err.lineno})", "device_map") from None
    if not isinstance(mapping, dict) or not mapping:
        raise BadInput(f"device_map {path}: must map module names to devices", "device_map")
    for device in mapping.values():
        _placement_device(device, "device_map", disk=True)
    return mapping


def placement_kwargs(placement: dict) -> dict:
    """`from_pretrained` arguments of a placement: GPUs by index, as accelerate wants them."""
    device_map = placement["device_map"]
    if isinstance(device_map, dict):
        device_map = {module: _placement_device(device, "device_map", disk=True)
                      for module, device in device_map.items()}
    kwargs = {"device_map": device_map}
    if "max_memory" in placement:
        kwargs["max_memory"] = {_placement_device(device, "max_memory"): size
                                for device, size in placement["max_memory"].items()}
    if "offload_folder" in placement:
        kwargs["offload_folder"] = placement["offload_folder"]
    return kwargs


def resolve(name: str, role: str) -> str:
    """A pair name from configs/ stands for that pair's fetched draft or target folder; anything
    else is a Hugging Face id or a local folder, passed on as is."""
    if name in pair_names():
        return str(model_dir(name, role))
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not os.path.isdir(os.path.expanduser(name)):
        raise BadInput(f"{role} {name}: no such folder", role)
    return os.path.expanduser(name) if looks_local else name


def _quiet_hub() -> None:
    """The hub client logs each retry when offline; the one-line error says enough."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


def load_config(name: str, role: str):
    """The model's configuration, read before its tokenizer and weights: a folder whose config.json
    transformers cannot read (an unknown `model_type`, none at all) is an error naming it here,
    before anything else of it is blamed."""
    from transformers import AutoConfig

    _quiet_hub()
    try:
        return AutoConfig.from_pretrained(resolve(name, role))
    except (OSError, ValueError) as err:
        raise cannot("read", f"{role} model", name, role, err) from None


def load_tokenizer(name: str, role: str):
    from transformers import AutoTokenizer

    _quiet_hub()
    path = resolve(name, role)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise cannot("load", f"{role} tokenizer", name, role, err) from None


def load_model(name: str, role: str, device: torch.device, dtype: torch.dtype, placement: dict | None = None):
    """The model in eval mode, whole on `device`, or spread as `placement` says (placement_of)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # our own status line says what is loading

    path = resolve(name, role)
    try:
        if placement:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement_kwargs(placement))
        else:
            model = read_whole(path, dtype) or AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise cannot("load", f"{role} model", name, role, err) from None
    except (SafetensorError, pickle.UnpicklingError, EOFError) as err:  # a weights file of random bytes, or empty
        # torch's own words for a bad pickle advise weights_only=False, which would run the file's code.
        fault = type(err).__name__ if isinstance(err, pickle.UnpicklingError) else one_line(err)
        raise BadInput(f"cannot load the {role} model '{name}': its weights file is not one transformers reads"
                       f" ({fault})") from None
    model = (model if placement else model.to(device)).eval()
    check_tree_attention(model, name)
    return model


def read_whole(path: str, dtype: torch.dtype):
    """The model of a local folder of safetensors files, its weights read into memory of its own
    one tensor at a time (None for anything else: a hub id, .bin weights). transformers maps the
    files instead, and the mapped pages stay resident beside every weight set_up packs or
    quantizes, twice the model in all; read this way, each replaced weight is freed as it goes."""
    from safetensors import safe_open
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, GenerationConfig

    files = weight_files(path) if os.path.isdir(path) else []
    config = AutoConfig.from_pretrained(path) if files else None
    if config is None or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        return None
    weights = {}
    for file in files:
        with safe_open(file, framework="pt", device="cpu", backend="pread") as opened:
            names = opened.keys()  # a safe_open is no mapping: it has keys() but no iteration
            for key in names:
                tensor = opened.get_tensor(key)
                weights[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    model = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].from_pretrained(None, config=config, state_dict=weights,
                                                                       dtype=dtype)
    if os.path.exists(os.path.join(path, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def weight_files(folder: str) -> list[str]:
    """The safetensors files transformers reads from a folder: model.safetensors, or the shards its
    index names (other .safetensors files, a consolidated copy say, are not the model's)."""
    whole, index = os.path.join(folder, "model.safetensors"), os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(whole):
        return [whole]
    if os.path.exists(index):
        with open(index) as handle:
            return [os.path.join(folder, name) for name in sorted(set(json.load(handle)["weight_map"].values()))]
    return []


def cannot(verb: str, what: str, name: str, role: str, err: Exception) -> BadInput:
    """The one-line error of a model that does not load. A name that is no local folder and that
    the hub could not be asked about (offline, or no network) says so and what would mend it,
    rather than the hub client's words about connections."""
    first = _first_line(err)
    unreachable = any(words in first.lower() for words in ("couldn't connect", "offline mode", "cached files"))
    if unreachable and not os.path.isdir(os.path.expanduser(name)):
        return BadInput(f"{role} '{name}' is not a local folder and not in the Hugging Face cache, and the hub cannot"
                        " be reached: give a local folder or a pair name (sequoia pairs), or download it where the"
                        " hub is reachable", role)
    return BadInput(f"cannot {verb} the {what} '{name}': {first}")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


def check_same_tokenizer(draft_tokenizer, target_tokenizer) -> None:
    """Speculative decoding compares token ids: both models must mean the same by each id."""
    draft_vocab, target_vocab = draft_tokenizer.get_vocab(), target_tokenizer.get_vocab()
    if draft_vocab != target_vocab:
        differing = sum(1 for token, i in target_vocab.items() if draft_vocab.get(token) != i)
        raise BadInput(f"the draft and target tokenizers differ ({len(draft_vocab)} vs {len(target_vocab)} tokens,"
                       f" {differing} target tokens with another id): pick a draft of the target's family")


def encode_prompt(tokenizer, text: str, chat_template: bool) -> list[int]:
    """Token ids of a prompt; instruct models get it as a user turn when they have a template."""
    if chat_template and tokenizer.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]


def next_turn_ids(tokenizer, turns: list[str], answers: list[str], held: list[int], chat_template: bool) -> list[int]:
    """Token ids of a conversation up to the answer to turns[len(answers)]: `held` (the ids of the
    conversation so far, its last answer included) followed by what the next turn adds. With a
    chat template that is the rendered conversation past `held` (the whole rendering where its ids
    do not start with `held`); without one, a blank line and the turn's text."""
    if chat_template and tokenizer.chat_template:
        messages = [{"role": role, "content": text} for turn, answer in zip(turns, answers)
                    for role, text in (("user", turn), ("assistant", answer))]
        messages.append({"role": "user", "content": turns[len(answers)]})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return held + ids[len(held):] if ids[:len(held)] == held else ids
    return held + tokenizer("\n\n" + turns[len(answers)], add_special_tokens=False)["input_ids"]


def conversation_bound(tokenizer, turns: list[str], answer_tokens: int, chat_template: bool) -> int:
    """The most tokens a conversation's last prompt can hold when every answer takes at most
    `answer_tokens` tokens: its turns around empty answers, plus the answers and one token each for
    a tokenization that splits an answer's text otherwise."""
    if chat_template and tokenizer.chat_template:
        base = len(next_turn_ids(tokenizer, turns, [""] * (len(turns) - 1), [], True))
    else:
        base = len(encode_prompt(tokenizer, turns[0], False)) + sum(
            len(tokenizer("\n\n" + turn, add_special_tokens=False)["input_ids"]) for turn in turns[1:])
    return base + (len(turns) - 1) * (answer_tokens + 1)


def encode_prompts(tokenizer, prompts: list[str], context: int, chat_template: bool = True) -> list[list[int]]:
    """Token ids of each prompt, checked to leave room in the models' context."""
    encoded = [encode_prompt(tokenizer, prompt, chat_template) for prompt in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise BadInput(f"prompt {i + 1} is empty")
        if len(ids) >= context:
            raise BadInput(f"prompt {i + 1} has {len(ids)} tokens: past the models' context of {context}")
    return encoded


def eos_ids(model, tokenizer) -> set[int]:
    """The ids that end generation: the model's generation config, else the tokenizer's."""
    configured = model.generation_config.eos_token_id
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        return set()
    return set(configured) if isinstance(configured, (list, tuple)) else {configured}
