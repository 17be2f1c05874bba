"""Post-training a pretrained world model: the library layer under the post-training service.

    from worldloom.models.posttrain import LoraOptions, prepare, resize_actions, save_adapter, merge

    change = resize_actions(model, ActionSpec.continuous(7), resize=True)   # a new embodiment
    model, info = prepare(model, "lora", lora=LoraOptions(rank=8, alpha=16), new_modules=change.new_modules)
    ...train the parameters with requires_grad...
    save_adapter(path, model, info, base_model=base_id, base_sha256=sha)   # small file, base kept apart
    merge(model)                                                           # or a plain merged model

Modules: ``methods`` (full / heads / lora, refusals with stable codes), ``adapters`` (adapter files,
load onto a base, merge), ``actions`` (add / resize / replace the action encoder, keep the rest).
"""

from worldloom.models.posttrain.actions import ActionChange, fits, resize_actions
from worldloom.models.posttrain.adapters import FORMAT as ADAPTER_FORMAT
from worldloom.models.posttrain.adapters import adapter_tensors, load_adapter, merge, resume_state, save_adapter
from worldloom.models.posttrain.methods import METHODS, LoraOptions, PosttrainError, Prepared, prepare, resolve_targets

__all__ = [
    "ADAPTER_FORMAT",
    "METHODS",
    "ActionChange",
    "LoraOptions",
    "PosttrainError",
    "Prepared",
    "adapter_tensors",
    "fits",
    "load_adapter",
    "merge",
    "prepare",
    "resize_actions",
    "resolve_targets",
    "resume_state",
    "save_adapter",
]
