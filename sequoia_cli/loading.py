"""A draft/target pair as the user chose it: the names, each model's setup, then the loaded models.

Every command that loads models takes the same choices (`ModelChoice`); `resolve` checks them
before anything loads, so that a bad option costs no loading time, and `load` brings up the
models with the tokenizers checked to agree.
"""

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from sequoia_cli.errors import BadInput
from sequoia_cli.pairs import pair_config, pair_names

DEFAULT_PAIR = "qwen2.5-coder"


@dataclass(frozen=True)
class ModelChoice:
    """The models and their setup as asked for: a pair name, or a draft and a target, each a
    Hugging Face id or a local folder; None leaves a setup to the pair's default."""

    draft: str | None = None
    target: str | None = None
    pair: str | None = None
    device: str = "cpu"
    dtype: str = "bfloat16"
    draft_quantize: str | None = None
    target_quantize: str | None = None
    draft_vocab: int | None = None
    device_map: str | None = None
    max_memory: str | None = None
    offload_folder: str | None = None
    engine: str = "auto"


@dataclass(frozen=True)
class Resolved:
    """The checked choice: the models' names (no draft: None) and setups, the device, dtype and
    engine (kv.py; `auto` resolved). `setups` is {"draft": {"quantize", "vocab"}, "target":
    {"quantize", "vocab", "placement"}}."""

    draft_name: str | None
    target_name: str
    setups: dict
    device: str
    dtype: str
    pair: str | None = None
    engine: str = "eager"


@dataclass(frozen=True)
class Limits:
    """What the models can serve, from their configurations: the tokens of context both take
    (engine.config_context), and the target's vocabulary, its output size (None where its
    configuration does not say)."""

    context: int
    vocab: int | None

    @classmethod
    def of(cls, configs: list) -> "Limits":
        """The limits of models with these configurations, the target's first."""
        from sequoia_cli.devices import config_context

        context = min(config_context(config) for config in configs)
        return cls(context, getattr(configs[0], "vocab_size", None))

    def check_children(self, children: int, setting: str) -> None:
        """A node's children are distinct tokens: at most the vocabulary."""
        if self.vocab is not None and children > self.vocab:
            raise BadInput(f"{setting} asks for {children} children of a node, but the target's vocabulary has"
                           f" {self.vocab} tokens", setting)


@dataclass
class Loaded:
    """The models of a resolved choice, set up, with their one tokenizer."""

    resolved: Resolved
    target: object
    draft: object
    tokenizer: object


def resolve(choice: ModelChoice, need_draft: bool, default_pair: str | None = None) -> Resolved:
    """The names and setups of `choice`; `default_pair` stands in where no model is named. A
    command that needs no draft drops it."""
    from sequoia_cli.kv import check_engine, engine_for
    from sequoia_cli.models import device_of, dtype_of, placement_of

    pair, draft, target = choice.pair, choice.draft, choice.target
    if not (pair or draft or target):
        pair = default_pair
    if pair and (draft or target):
        raise BadInput("pair sets both models: give it alone, or draft and target", "pair", "draft", "target")
    if pair:
        pair_config(pair)  # an unknown name is an error here, not a Hugging Face id
        draft, target = pair, pair
    if not target:
        raise BadInput("no target model: give target (or pair)", "target", "pair")
    if need_draft and not draft:
        raise BadInput("no draft model: give draft (or pair)", "draft", "pair")
    device, _ = device_of(choice.device), dtype_of(choice.dtype)
    draft = draft if need_draft else None
    placement = placement_of(choice.device_map, choice.max_memory, choice.offload_folder)
    check_engine(choice.engine, device, placement is not None)
    setups = setups_of(choice, draft, target, placement, device.type)
    return Resolved(draft, target, setups, choice.device, choice.dtype, pair,
                    engine_for(choice.engine, device, placement is not None))


def setups_of(choice: ModelChoice, draft: str | None, target: str, placement: dict | None, device_type: str) -> dict:
    """Each model's setup: the options given, else the defaults of the pair a model comes from on
    this device type (`cpu`, `cuda`): its `setup:` in configs/ with its `setup_<device type>:`
    over it, else no quantization and the whole vocabulary; the target's placement
    (models.placement_of), None for whole on the device."""
    from sequoia_cli.quantize import QUANTIZE

    def default(name, role, key):
        if name not in pair_names():
            return None
        model = pair_config(name)[role]
        return {**model.get("setup", {}), **model.get(f"setup_{device_type}", {})}.get(key)

    vocab = choice.draft_vocab if choice.draft_vocab is not None else default(draft, "draft", "vocab")
    setups = {"target": {"quantize": choice.target_quantize or default(target, "target", "quantize") or "none",
                         "vocab": None, "placement": placement},
              "draft": {"quantize": choice.draft_quantize or default(draft, "draft", "quantize") or "none",
                        "vocab": vocab}}
    for role, setup in setups.items():
        if setup["quantize"] not in QUANTIZE:
            raise BadInput(f"{role}_quantize '{setup['quantize']}' is not one of {', '.join(QUANTIZE)}",
                           f"{role}_quantize")
    if placement and setups["target"]["quantize"] != "none":
        raise BadInput("target_quantize and a placement (device_map, max_memory, offload_folder) do not go"
                       " together: accelerate streams the target's own weights",
                       "target_quantize", "device_map", "max_memory", "offload_folder")
    return setups


def load(resolved: Resolved, status: Callable[[str], object] = lambda text: nullcontext(),
         check: Callable[[object, Limits], None] | None = None) -> Loaded:
    """The models of `resolved`, each set up as its setup says; `status(text)` is a context shown
    while a model loads. `check(tokenizer, limits)` runs once the configurations and tokenizers
    are read, before any weights load: work the models cannot serve (a prompt past their context,
    more children than the vocabulary) fails there."""
    from sequoia_cli.models import check_same_tokenizer, device_of, dtype_of, load_config, load_model, load_tokenizer
    from sequoia_cli.quantize import check_kernels, kept_ids, set_up

    where, precision = device_of(resolved.device), dtype_of(resolved.dtype)
    setups, draft_name = resolved.setups, resolved.draft_name
    roles = {"target": resolved.target_name, **({"draft": draft_name} if draft_name else {})}
    configs = [load_config(name, role) for role, name in roles.items()]
    tokenizer = load_tokenizer(resolved.target_name, "target")
    if draft_name:
        check_same_tokenizer(load_tokenizer(draft_name, "draft"), tokenizer)
        if setups["draft"]["vocab"] is not None:
            kept_ids(tokenizer, setups["draft"]["vocab"], len(tokenizer))  # a bad count fails before loading
    for role in roles:
        check_kernels(setups[role]["quantize"], where, f"{role}_quantize")
    if check:
        check(tokenizer, Limits.of(configs))
    placement = setups["target"]["placement"]
    with status(f"loading target {resolved.target_name} ({resolved.dtype},"
                f" {'placed by accelerate' if placement else resolved.device})"):
        target = set_up(load_model(resolved.target_name, "target", where, precision, placement), tokenizer,
                        setups["target"]["quantize"], None)
    draft = None
    if draft_name:
        with status(f"loading draft {draft_name}"):
            draft = set_up(load_model(draft_name, "draft", where, precision), tokenizer,
                           setups["draft"]["quantize"], setups["draft"]["vocab"])
    return Loaded(resolved, target, draft, tokenizer)


def describe(setup: dict) -> str:
    """A setup in words: its quantization, vocabulary and placement."""
    vocab = "whole vocabulary" if setup.get("vocab") is None else f"vocabulary {setup['vocab']}"
    placement = f", placed {json.dumps(setup['placement'])}" if setup.get("placement") else ""
    return f"quantize {setup.get('quantize', 'none')}, {vocab}{placement}"


def labels(resolved: Resolved) -> dict:
    """The models as a report names them: a pair's by their model names, with each model's setup
    where it is not the plain one."""
    names = {"target": resolved.target_name, "draft": resolved.draft_name}
    if resolved.pair:
        config = pair_config(resolved.pair)
        names = {role: f"{config[role]['name']} (pair {resolved.pair})" for role in ("target", "draft")}
    for role, setup in resolved.setups.items():
        shown = [setup["quantize"]] if setup["quantize"] != "none" else []
        shown += [f"vocabulary {setup['vocab']}"] if setup["vocab"] is not None else []
        shown += [f"placed {json.dumps(setup['placement'])}"] if setup.get("placement") else []
        names[role] += f", {', '.join(shown)}" if shown else ""
    return names
