"""What a head can do, declared as data on its class (`capabilities = Capabilities(...)`).

Every check of "can this head do X" reads the declaration, so adding a head means its class (with its
declaration), its YAML under `conf/head/` and its tests; no list of head names lives anywhere else.
A head's config schema is generated from its constructor (`schema_fields`): the keyword parameters after
the data-derived ones (`DATA_ARGS`) are its knobs, with their defaults and types.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional, Union

TASKS = ("rating", "ctr", "ranking")
# arguments the build path passes to every head from the data (not config knobs)
DATA_ARGS = ("n_users", "n_items", "item_features", "history", "warm_items", "known_users", "global_mean",
             "item_text", "kg", "item_names", "item_noun", "llm", "train_pairs", "sample_sources")


@dataclass(frozen=True)
class Capabilities:
    tasks: tuple[str, ...] = TASKS  # the tasks the head's scores make sense for
    closed_form: bool = False  # fitted when built: the loop runs no epochs
    # ranking: the history holds every rated row (weight 1 if liked, else 0) rather than the liked ones only;
    # a knob's name: only when that knob is > 0 (e.g. EASE's negative_weight)
    all_rows: Union[bool, str] = False
    kg: bool = False  # its towers take KG entity vectors (kg=attributes / triples)
    text_tower: bool = False  # it can train the text encoder jointly (peft other than frozen)
    new_users: bool = False  # serves users through a swapped-in history (cold users, users after training)
    new_items: bool = False  # scores items added after training from their text vectors (`with_new_items`)
    needs_text: bool = False  # needs item text vectors (an encoder)
    prompts: bool = False  # reads prompts with the `llm=` language model; `peft=` trains that model
    full_ranking: bool = True  # can score every item for every user (eval.ranking); prompt heads score pairs only

    def describe(self) -> str:
        parts = [f"tasks {', '.join(self.tasks)}"]
        flags = ("closed_form", "kg", "text_tower", "new_users", "new_items", "needs_text", "prompts")
        parts += [name for name in flags if getattr(self, name)]
        if not self.full_ranking:
            parts.append("pairs only")
        return "; ".join(parts)


def head_class(target: Union[str, type]) -> type:
    if isinstance(target, type):
        return target
    from hydra.utils import get_class

    return get_class(target)


def capabilities_of(target: Union[str, type]) -> Capabilities:
    """The declaration of the head class `target` (a `_target_` path or the class)."""
    cls = head_class(target)
    caps = getattr(cls, "capabilities", None)
    if not isinstance(caps, Capabilities):
        raise TypeError(f"head {cls.__module__}.{cls.__qualname__} declares no `capabilities = Capabilities(...)` "
                        "(recsys_fewshot.models.capabilities)")
    return caps


def reads_all_rows(target: Union[str, type], knobs: Optional[dict[str, Any]] = None) -> bool:
    """Whether the head's histories hold every rated row in the ranking task (see `Capabilities.all_rows`)."""
    flag = capabilities_of(target).all_rows
    if isinstance(flag, str):
        return float((knobs or {}).get(flag) or 0) > 0
    return bool(flag)


def heads_that(predicate, targets: dict[str, str]) -> list[str]:
    """Names (of `targets`: name -> `_target_`) whose declaration satisfies `predicate` (for error messages)."""
    out = []
    for name, target in targets.items():
        try:
            if predicate(capabilities_of(target)):
                out.append(name)
        except (ImportError, TypeError, AttributeError):
            continue
    return out


def _signature_params(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of `cls`'s constructor, following `*args, **kwargs` up to the base class that
    takes them (NCF(*args, hidden, dropout, **kwargs) adds its own to Recommender's). A `**kwargs` that no
    base class consumes is an error: the schema must be exactly what the head accepts."""
    params: dict[str, inspect.Parameter] = {}
    forwards = True
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        forwards = False
        for name, p in inspect.signature(init).parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                forwards = True
                continue
            params.setdefault(name, p)
        if not forwards:
            break
    if forwards:
        raise TypeError(f"{cls.__qualname__}.__init__ takes **kwargs that no base class consumes: name its knobs")
    return params


def data_arguments(cls: type) -> list[str]:
    """The data-derived arguments (`DATA_ARGS`) head `cls` takes; the build path passes only those."""
    return [name for name in _signature_params(cls) if name in DATA_ARGS]


def schema_fields(cls: type) -> list[tuple[str, Any, Any]]:
    """(name, annotation, default) of every knob of head `cls`: its constructor's keyword parameters after
    the data arguments; a knob without a default is an error."""
    hints = _hints(cls)
    out = []
    for name, p in _signature_params(cls).items():
        if name in DATA_ARGS:
            continue
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__qualname__}: knob {name!r} has no default")
        out.append((name, hints.get(name, Any), p.default))
    return out


def _hints(cls: type) -> dict[str, Any]:
    import typing

    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints.update(typing.get_type_hints(init))
        except Exception:  # noqa: BLE001 - unresolvable annotation: the knob is typed Any
            continue
    return hints
