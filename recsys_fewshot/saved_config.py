"""A saved run folder's config, checked before anything is built from it: its options merged onto today's schemas
(keys added since it was saved get their defaults) and every `_target_` in it one this project declares."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from recsys_fewshot.config import SCHEMAS, OptimizerConfig

TRUSTED_TARGETS = ("recsys_fewshot.", "torch.optim.")


def _option_schema(group: str, name: Any, key: str, source: str) -> type:
    schema = SCHEMAS[group].get(name) if isinstance(name, str) and name != "base" else None
    if schema is None:
        known = ", ".join(n for n in SCHEMAS[group] if n != "base")
        raise ValueError(f"{source}: {key}={name!r} is not an option of this project (expected one of {known})")
    return schema


def saved_run_config(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """A saved run's config (a plain dict, as `config.yaml` holds it) in today's shape, naming only this
    project's classes: the PEFT method and the tracker are the classes of the names the run recorded
    (`peft.method`, `logger.name`), whatever `_target_` the file says; a run saved before readers were chosen
    by `_target_` (`dataset.kind`, `dataset.options`) gets the reader of that kind; a key a group's schema gained
    since the run was saved (e.g. `dataset.missing_text_limit`) takes its default. Idempotent. `source`: the
    file, for messages. Any other `_target_` must lie in TRUSTED_TARGETS."""
    import dataclasses

    out = dict(cfg)
    dataset = dict(out.get("dataset") or {})
    if "kind" in dataset:  # runs saved before the reader was chosen by `_target_`
        schema = _option_schema("dataset", dataset.pop("kind"), "dataset.kind", source)
        reader_target = schema.__dataclass_fields__["reader"].default_factory()._target_
        dataset = {"reader": {"_target_": reader_target, **(dataset.pop("options", None) or {})}, **dataset}
        out["dataset"] = dataset
    for group, key in (("peft", "method"), ("logger", "name")):
        node = out.get(group)
        if node is None:
            continue
        schema = _option_schema(group, node.get(key), f"{group}.{key}", source)
        fields = {f.name for f in dataclasses.fields(schema)}
        out[group] = {"_target_": schema._target_, **{k: v for k, v in node.items() if k in fields and k != "_target_"}}
    for group, schemas in SCHEMAS.items():  # keys a group gained after the run was saved: their defaults
        node, base = out.get(group), schemas.get("base")
        if isinstance(node, dict) and base is not None:
            new = {f.name: f.default for f in dataclasses.fields(base)
                   if f.name not in node and f.name != "_target_" and f.default is not dataclasses.MISSING}
            out[group] = {**node, **new}
    _check_targets(out, source)
    head = out.get("head")
    if isinstance(head, dict) and head.get("_target_"):
        # runs saved when every head's config also held keys it ignored (e.g. head.dim of EASE): dropped, as then
        from recsys_fewshot.registry import head_keys

        keys = set(head_keys(head["_target_"]))
        out["head"] = {k: v for k, v in head.items() if k in keys or k == "_target_"}
    return out


def allowed_targets() -> dict[str, set[str]]:
    """{key path: the `_target_`s this project's own options put there}: what a saved run's config may name.
    A class or function of the package at another place (e.g. `tracking.write_text` as a data reader) is
    refused, so a shared or downloaded run folder cannot run code through its config.yaml."""
    import yaml

    from recsys_fewshot.registry import CONF_DIR, head_options

    out: dict[str, set[str]] = {"head": set(head_options().values()), "split": set(), "dataset.reader": set(),
                                "optimizer": {OptimizerConfig._target_}, "peft": set(), "logger": set()}
    for name, schema in SCHEMAS["split"].items():
        if isinstance(getattr(schema, "_target_", None), str):
            out["split"].add(schema._target_)
    for schema in SCHEMAS["dataset"].values():
        reader = schema.__dataclass_fields__.get("reader")
        if reader is not None and reader.default_factory is not dataclasses.MISSING:
            out["dataset.reader"].add(reader.default_factory()._target_)
    for group, key in (("optimizer", "_target_"), ("peft", "_target_"), ("logger", "_target_"),
                       ("split", "_target_"), ("dataset", "reader")):
        for path in (CONF_DIR / group).glob("*.yaml"):
            node = (yaml.safe_load(path.read_text()) or {}).get(key)
            target = node.get("_target_") if isinstance(node, dict) else node
            if isinstance(target, str):
                out["dataset.reader" if group == "dataset" else group].add(target)
    return out


def _check_targets(node: Any, source: str, path: str = "", allowed: Optional[dict[str, set[str]]] = None) -> None:
    allowed = allowed if allowed is not None else allowed_targets()
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                ok = isinstance(value, str) and value.startswith(TRUSTED_TARGETS) and value in allowed.get(path, ())
                if not ok:
                    raise ValueError(f"{source}: {where}={value!r} is not one of the classes this project's own "
                                     f"options put at {path or 'the top'} ({', '.join(sorted(allowed.get(path, ()))) or 'none'}); "
                                     "a saved run's config is only instantiated from the project's own options")
            _check_targets(value, source, where, allowed)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_targets(value, source, f"{path}[{i}]", allowed)
