"""The heads that exist, their generated schemas, and help for a command line Hydra refused.

A head is an option of the `head` config group: `conf/head/<name>.yaml` names its class (`_target_`), and
the group's schema for it is generated here from that class's constructor (`models.capabilities`
`schema_fields`): exactly its knobs, each default written once, in the signature. An unknown or
inapplicable key (`head=ease head.dim=7`) then fails at composition, and `explain_on_failure` adds, after
Hydra's message, the keys that head takes (or, for `peft.<key>`, the keys of the chosen PEFT method and
the methods that have that key), or the new spelling of a renamed option or key.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import functools
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Optional

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# spellings that changed: the old override -> the new one
RENAMED = {
    "head=inductive": "model=inductive",
    "head=fewshot_book": "model=fewshot_book",
}
# keys that moved: the old key (a prefix when it ends in ".") -> the new one; dataset.kind=NAME became the
# option dataset=NAME, which names its reader (dataset.reader._target_)
RENAMED_KEYS = {
    "dataset.kind": "dataset",
    "dataset.options.": "dataset.reader.",
}


@functools.lru_cache(maxsize=None)
def head_options(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """{option name: `_target_`} of every `conf/head/<name>.yaml`."""
    import yaml

    out = {}
    for path in sorted((conf_dir / "head").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if not target:
            raise ValueError(f"{path}: a head option names its class with `_target_: package.module.Class`")
        out[path.stem] = target
    return out


def _omegaconf_type(annotation: Any) -> Any:
    """An annotation OmegaConf's structured configs accept (Sequence[int] and tuples become List)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (int, float, bool, str):
        return annotation
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return Optional[_omegaconf_type(inner[0])]
        return Any
    if origin in (list, tuple, collections.abc.Sequence):
        elem = args[0] if args else Any
        return list[_omegaconf_type(elem)] if elem in (int, float, bool, str) else list
    return Any


@functools.lru_cache(maxsize=None)
def head_schema(target: str) -> type:
    """The structured-config schema of the head class `target`: `_target_` plus one field per knob."""
    knobs = source_knobs(target)
    if knobs is None:  # the constructor could not be read from source: import the class (slower start)
        from recsys_fewshot.models.capabilities import head_class, schema_fields

        knobs = schema_fields(head_class(target))
    fields = [("_target_", str, dataclasses.field(default=target))]
    for name, annotation, default in knobs:
        if isinstance(default, (list, tuple)):
            value = list(default)
            fields.append((name, _omegaconf_type(annotation), dataclasses.field(default_factory=lambda v=value: list(v))))
        else:
            fields.append((name, _omegaconf_type(annotation), dataclasses.field(default=default)))
    return dataclasses.make_dataclass(f"{target.rsplit('.', 1)[-1]}HeadConfig", fields)


_ANNOTATIONS = {"int": int, "float": float, "bool": bool, "str": str, "Optional": Optional, "Sequence": typing.Sequence,
                "list": list, "tuple": tuple, "List": list, "Tuple": tuple, "Any": Any}


def source_knobs(target: str) -> Optional[list[tuple[str, Any, Any]]]:
    """The knobs of head class `target` read from its module's source with `ast`, without importing it
    (so composing a config does not import torch): what `capabilities.schema_fields` gives on the imported
    class (a test checks both agree). None when the source cannot say (a base class from another module,
    a default that is not a literal)."""
    import ast
    import importlib.util

    from recsys_fewshot.models.capabilities import DATA_ARGS

    module, _, name = target.rpartition(".")
    try:
        spec = importlib.util.find_spec(module)
        tree = ast.parse(Path(spec.origin).read_text())
    except Exception:  # noqa: BLE001 - not a plain source module: import it instead
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    params: dict[str, tuple[Any, Any]] = {}
    cls = classes.get(name)
    while cls is not None:
        init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:  # inherited: the first base class defines it
            cls = _base(cls, classes)
            if cls is False:
                return None
            continue
        args = init.args
        positional = args.posonlyargs + args.args
        defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        pairs = list(zip(positional, defaults)) + list(zip(args.kwonlyargs, args.kw_defaults))
        try:
            for arg, default in pairs:
                if arg.arg == "self" or arg.arg in params or arg.arg in DATA_ARGS:
                    continue
                if default is None:
                    return None  # a knob without a default: let the import path say so
                annotation = (eval(ast.unparse(arg.annotation), {"__builtins__": {}}, _ANNOTATIONS)  # noqa: S307
                              if arg.annotation else Any)
                params[arg.arg] = (annotation, ast.literal_eval(default))
        except Exception:  # noqa: BLE001 - not a literal or an unknown annotation
            return None
        if args.kwarg is None:
            return [(k, a, d) for k, (a, d) in params.items()]
        cls = _base(cls, classes)  # **kwargs: forwarded to the base class
        if cls is None or cls is False:
            return None
    return None


def _base(cls, classes):
    """The first base class of `cls` when it is defined in the same module; False when it is not."""
    import ast

    if not cls.bases:
        return None
    base = cls.bases[0]
    return classes.get(base.id, False) if isinstance(base, ast.Name) else False


def head_keys(target: str) -> list[str]:
    return [f.name for f in dataclasses.fields(head_schema(target)) if f.name != "_target_"]


def failure_hints(argv: list[str]) -> list[str]:
    """What to tell a user whose command line Hydra refused: renamed spellings, and for `head.<key>`
    overrides the keys the chosen head takes."""
    hints = []
    for arg in argv:
        plain = arg.lstrip("+~")
        if plain in RENAMED:
            hints.append(f"{plain} is now spelled {RENAMED[plain]}")
        key, _, value = plain.partition("=")
        for old, new in RENAMED_KEYS.items():
            if key == old or (old.endswith(".") and key.startswith(old)):
                spelled = f"{new}{key[len(old):]}={value}" if old.endswith(".") else f"{new}={value}"
                hints.append(f"{plain} is now spelled {spelled}")
    chosen = dict(a.lstrip("+~").split("=", 1) for a in argv if "=" in a and "." not in a.split("=", 1)[0])
    if "experiment" in chosen and "head" in chosen:
        pair = experiment_pair(chosen["experiment"])
        if pair:
            protocol, model = pair
            presets = models_with_head(chosen["head"])
            hints.append(f"experiment={chosen['experiment']} is protocol={protocol} model={model}, whose settings "
                         f"may not fit head={chosen['head']}: run "
                         + " or ".join([f"experiment={chosen['experiment']} model={m}" for m in presets]
                                       + [f"protocol={protocol} head={chosen['head']}"]))
    hints += _peft_key_hints(argv)
    head_args = [a.lstrip("+~").split("=", 1)[0] for a in argv if a.lstrip("+~").startswith("head.")]
    if not head_args:
        return hints
    target, choice = _composed_head(argv)
    if target is None:
        return hints
    try:
        keys = head_keys(target)
    except Exception:  # noqa: BLE001 - a broken head class: Hydra's own message stands
        return hints
    for key in head_args:
        name = key.split(".", 2)[1]
        if name not in keys:
            hints.append(f"{key}: head={choice} ({target.rsplit('.', 1)[-1]}) has no key {name!r}; its keys: "
                         f"{', '.join(keys)}")
    return hints


def _peft_key_hints(argv: list[str]) -> list[str]:
    """For `peft.<key>` overrides the chosen method lacks: its keys, and the methods that have that key."""
    from recsys_fewshot.config import SCHEMAS

    keys = [a.lstrip("+~").split("=", 1)[0] for a in argv if a.lstrip("+~").startswith("peft.")]
    if not keys:
        return []
    choice = _composed_choice(argv, "peft")
    schemas = {n: {f.name for f in dataclasses.fields(c)} - {"_target_"} for n, c in SCHEMAS["peft"].items()
               if n != "base"}
    if choice not in schemas:
        return []
    hints = []
    for key in keys:
        name = key.split(".", 2)[1]
        if name not in schemas[choice]:
            having = [n for n, fields in schemas.items() if name in fields]
            hints.append(f"{key}: peft={choice} has no key {name!r}; its keys: {', '.join(sorted(schemas[choice]))}"
                         + (f"; methods with {name}: {', '.join(having)}" if having else ""))
    return hints


def experiment_pair(name: str, conf_dir: Path = CONF_DIR) -> Optional[tuple[str, str]]:
    """(protocol, model) of `experiment=<name>`, read from its YAML (None when it is not such a pair)."""
    import yaml

    path = conf_dir / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return None
    picked = {}
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                picked[key.split("/")[-1]] = value
    return (picked["protocol"], picked["model"]) if "protocol" in picked and "model" in picked else None


def models_with_head(head: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The `model=` presets that choose `head=<head>` themselves."""
    import yaml

    out = []
    for path in sorted((conf_dir / "model").glob("*.yaml")):
        for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
            if isinstance(entry, dict) and entry.get("override /head") == head:
                out.append(path.stem)
    return out


def _composed(argv: list[str]):
    """The config of the command line's group choices only (None if that cannot be composed either)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    choices = [a for a in argv if "=" in a and "." not in a.split("=", 1)[0] and not a.startswith(("-", "hydra"))
               and "," not in a and "(" not in a and a not in RENAMED]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=choices, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - only a hint: nothing more to say
        return None
    finally:
        GlobalHydra.instance().clear()


def _composed_choice(argv: list[str], group: str) -> Optional[str]:
    """The option of `group` the command line chooses (directly or through a preset)."""
    cfg = _composed(argv)
    return None if cfg is None else str(cfg.hydra.runtime.choices.get(group))


def _composed_head(argv: list[str]) -> tuple[Optional[str], Optional[str]]:
    """(`_target_`, option name) of the head the command line chooses (group choices only; None if that
    cannot be composed either)."""
    cfg = _composed(argv)
    if cfg is None:
        return None, None
    return str(cfg.head._target_), str(cfg.hydra.runtime.choices.get("head"))


@contextlib.contextmanager
def explain_on_failure(argv: list[str]) -> Iterator[None]:
    """Run a Hydra entry point; when it exits with an error, print `failure_hints` below Hydra's message."""
    try:
        yield
    except SystemExit as exc:
        if exc.code not in (0, None):
            for line in failure_hints(argv):
                print(line, file=sys.stderr)
        raise
