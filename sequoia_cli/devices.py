"""Where a model takes its inputs, how long a context it serves, and waiting for its device: what
the loop, the stages and model loading all ask of a loaded model."""

import torch


def input_device(model) -> torch.device:
    """Where a model takes its inputs and where the loop keeps its own tensors: the embedding's
    execution device when accelerate placed the model (its weights may sit elsewhere, on another
    device or on disk), else the model's device."""
    hook = getattr(model.get_input_embeddings(), "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return torch.device(device) if device is not None else model.device


def sync(device: torch.device) -> None:
    """Wait for queued GPU work on every GPU (a model may be spread over several), so that a clock
    read afterwards measures it."""
    if device.type == "cuda":
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)


def context_length(model) -> int:
    return config_context(model.config)


def config_context(config) -> int:
    """The tokens of context a model's configuration allows (2048 where it does not say)."""
    return int(getattr(config, "max_position_embeddings", None) or 2048)
