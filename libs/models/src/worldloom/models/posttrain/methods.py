"""Post-training methods: which weights of a pretrained world model a post-training run updates.

* ``full``: every weight. Best quality with enough data, but the result is a whole new model.
* ``heads``: only the conditioning layers and heads the model names (:meth:`WorldModel.conditioning_modules`:
  action encoder, text conditioner, reward/termination head) plus any ``new_modules``; the dynamics trunk
  stays frozen. Cheapest; right when the base already predicts the domain and only the labels are new.
* ``lora``: low-rank adapters (``peft``) on the Linear layers of the trunk, the base frozen; the adapter is
  a small file kept beside its base or merged into it (:mod:`.adapters`).

``new_modules`` (e.g. ``("actions",)`` after :func:`~.actions.resize_actions` gave a new embodiment its own
action encoder) are fully trainable under every method: they start from scratch, a frozen or low-rank copy
of them would learn nothing useful.

Everything is done in place on the model, which stays a :class:`WorldModel` (rollout, training inputs,
checkpoints keep working): peft's ``inject_adapter_in_model`` rather than ``get_peft_model``, whose
wrapper would hide the interface. Refusals are :class:`PosttrainError` with a stable ``code`` the
post-training service returns as its 4xx code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from worldloom.models.world.base import WorldModel

Method = Literal["full", "lora", "heads"]
METHODS: tuple[str, ...] = ("full", "lora", "heads")


class PosttrainError(ValueError):
    """A post-training request that does not apply to this model; ``code`` is stable, for API errors."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LoraOptions:
    """LoRA settings: ``rank`` r, ``alpha`` (an integer as in peft; the update is scaled by ``alpha / rank``),
    dropout on the adapter
    input, and ``target_modules`` (peft's rule: a module is targeted when its name equals an entry or ends
    with ``"." + entry``; None: the model's own :meth:`WorldModel.lora_targets`)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise PosttrainError("invalid_lora_options", f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int) or self.alpha < 1:
            raise PosttrainError("invalid_lora_options", f"LoRA alpha must be an integer >= 1, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise PosttrainError("invalid_lora_options", f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.target_modules is not None:
            targets = tuple(self.target_modules)
            if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
                raise PosttrainError("invalid_lora_options", "target_modules must be a non-empty list of module "
                                     "names (or omitted for the model's default targets)")
            object.__setattr__(self, "target_modules", targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": float(self.dropout),
                "target_modules": list(self.target_modules) if self.target_modules is not None else None}


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did: the trainable / total parameter counts and which modules train."""

    method: str
    trainable: int
    total: int
    #: modules trained whole (full: every top-level one; heads: conditioning + new modules; lora: new ones)
    trainable_modules: tuple[str, ...]
    new_modules: tuple[str, ...] = ()
    #: full names of the Linear layers that carry an adapter (lora only)
    lora_targets: tuple[str, ...] = ()
    lora: LoraOptions | None = None
    frozen: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frozen", self.total - self.trainable)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "trainable_parameters": self.trainable, "total_parameters": self.total,
                "frozen_parameters": self.frozen, "trainable_modules": list(self.trainable_modules),
                "new_modules": list(self.new_modules), "lora_targets": list(self.lora_targets),
                "lora": self.lora.to_dict() if self.lora is not None else None}


def prepare(model: WorldModel, method: str, *, lora: LoraOptions | None = None,
            new_modules: tuple[str, ...] | list[str] = ()) -> tuple[WorldModel, Prepared]:
    """Make ``model`` ready to post-train with ``method`` (in place; returns it and a description).

    ``lora`` options apply to ``method="lora"`` only (given with another method they are refused, not
    ignored). Refuses (:class:`PosttrainError`): an unknown method, a model already carrying adapters,
    unknown ``new_modules``, LoRA targets that match nothing (``unknown_target_module``) or that are not
    Linear layers / a family without any (``no_linear_layers``), a target inside a new module, and
    ``heads`` on a model that has neither conditioning layers nor heads.
    """
    if method not in METHODS:
        raise PosttrainError("unknown_method", f"method must be one of {list(METHODS)}, got {method!r}")
    if lora is not None and method != "lora":
        raise PosttrainError("invalid_lora_options", f"LoRA options given but the method is {method!r}")
    if has_adapters(model):
        raise PosttrainError("already_prepared", "the model already carries LoRA adapters (merge or reload it first)")
    new = tuple(dict.fromkeys(new_modules))
    names = dict(model.named_modules())
    for name in new:
        if name not in names or not any(True for _ in names[name].parameters()):
            raise PosttrainError("unknown_module", f"new module {name!r} is not a module with weights of this "
                                 f"{model.description} model")
    if method == "full":
        model.requires_grad_(True)
        whole = tuple(n for n, m in model.named_children() if any(True for _ in m.parameters()))
        whole += tuple(n for n, _ in model.named_parameters(recurse=False))
        return model, _describe(model, method, whole, new)
    if method == "heads":
        heads = tuple(dict.fromkeys(model.conditioning_modules() + new))
        if not heads:
            raise PosttrainError("no_heads", f"this {model.description} model has no action / text conditioning "
                                 "and no reward head to train with method 'heads'")
        model.requires_grad_(False)
        for name in heads:
            model.get_submodule(name).requires_grad_(True)
        return model, _describe(model, method, heads, new)
    opts = lora or LoraOptions()
    targets = resolve_targets(model, opts.target_modules, new)
    _inject(model, opts, targets)
    for name in new:
        model.get_submodule(name).requires_grad_(True)
    return model, _describe(model, method, new, new, targets, opts)


def resolve_targets(model: WorldModel, wanted: tuple[str, ...] | None, new_modules: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Full names of the Linear layers that ``wanted`` (peft's name rule) selects; see :func:`prepare`."""
    if wanted is None:
        default = model.lora_targets()
        if not default:
            raise PosttrainError("no_linear_layers", f"the {model.description} family names no Linear layers for "
                                 "LoRA; name target_modules or use method 'full' / 'heads'")
        wanted = default
    modules = [(n, m) for n, m in model.named_modules() if n]
    found: dict[str, None] = {}
    for target in wanted:
        hits = [(n, m) for n, m in modules if n == target or n.endswith("." + target)]
        if not hits:
            raise PosttrainError("unknown_target_module", f"target module {target!r} matches no module of this "
                                 f"{model.description} model (e.g. {', '.join(model.lora_targets()[:4])})")
        other = [f"{n} ({type(m).__name__})" for n, m in hits if type(m) is not nn.Linear]
        if other:
            raise PosttrainError("no_linear_layers", f"target module {target!r} matches {', '.join(other[:3])}: LoRA "
                                 "adapts Linear layers only")
        inside = [n for n, _ in hits for new in new_modules if n == new or n.startswith(new + ".")]
        if inside:
            raise PosttrainError("target_in_new_module", f"target {target!r} lies in a new module ({inside[0]}), "
                                 "which trains whole anyway")
        found.update(dict.fromkeys(n for n, _ in hits))
    return tuple(found)


def has_adapters(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("peft.") for m in model.modules())


def _inject(model: WorldModel, opts: LoraOptions, targets: tuple[str, ...]) -> None:
    # peft pulls in transformers (tens of seconds to import): only when LoRA is asked for
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=opts.rank, lora_alpha=opts.alpha, lora_dropout=float(opts.dropout),
                        target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, model)  # freezes every non-adapter weight


def _describe(model: WorldModel, method: str, whole: tuple[str, ...], new: tuple[str, ...],
              targets: tuple[str, ...] = (), opts: LoraOptions | None = None) -> Prepared:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Prepared(method, trainable, sum(p.numel() for p in model.parameters()), whole, new, targets, opts)
