"""What a run folder's saved config says, and overrides of it.

The analysis tools rebuild a trained model from its run folder's resolved ``config.yaml`` only
(:func:`load_run_config`), never from ``configs/``, so a model trained with ``max_seg_len=50`` is
never analysed with the default. Overrides of that config (``dynamics.boundary_force_scale=0.0``,
:func:`parse_overrides`, :func:`apply_overrides`) must name a key that exists in it (a typo is an
error, not a no-op) and are reported with the value they replace; keys that fix the input geometry
(:data:`SHAPE_CHANGING_KEYS`) are refused outright, because a wrong frame size can go unnoticed by a
convolution. :func:`detect_run_kind` tells a ``train.py`` run from a ``train_vta.py`` one.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping, Sequence

import yaml

__all__ = ["SHAPE_CHANGING_KEYS", "load_run_config", "config_leaves", "check_resolved", "detect_run_kind",
           "parse_overrides", "apply_overrides", "same_value_keys"]

#: Keys whose change alters what the model's input looks like; refused as overrides.
SHAPE_CHANGING_KEYS = ("env.size", "env.name", "env.full_action_space", "data.image_size",
                       "model.image_size", "model.channels")


def load_run_config(run_dir: str) -> dict:
    """The resolved config the run was trained with (``<run_dir>/config.yaml``) as a plain dict.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = Path(run, "config.yaml").write_text("{seed: 0, env: {name: atari, task: pong}}")
        ...     load_run_config(run)
        {'seed': 0, 'env': {'name': 'atari', 'task': 'pong'}}
        >>> load_run_config("no/such/run")
        Traceback (most recent call last):
        ...
        FileNotFoundError: run folder 'no/such/run' does not exist
    """
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder {run_dir!r} does not exist")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: analysis tools restore the training config from "
                                f"the run folder only (never from defaults)")
    with open(path) as fh:
        return check_resolved(yaml.safe_load(fh), path, "; the trainer must save OmegaConf.to_container(cfg, resolve=True)")


def config_leaves(tree: Mapping, prefix: str = "", *, keep_empty: bool = False) -> dict[str, Any]:
    """Every leaf of a nested mapping by its dotted key; with ``keep_empty`` an empty mapping is a leaf
    too (so that ``{"a": {}}`` and ``{}`` stay apart), otherwise it contributes nothing.

    Example:
        >>> config_leaves({"a": {"b": 1, "c": {"d": 2}}, "e": 3, "f": {}})
        {'a.b': 1, 'a.c.d': 2, 'e': 3}
        >>> config_leaves({"a": {"b": 1}, "f": {}}, keep_empty=True)
        {'a.b': 1, 'f': {}}
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and (value or not keep_empty):
            out.update(config_leaves(value, full + ".", keep_empty=keep_empty))
        else:
            out[full] = value
    return out


def check_resolved(config: Any, where: str, hint: str = "") -> dict:
    """A copy of ``config`` as a plain dict, or a ``ValueError`` naming ``where`` if it is not a mapping or
    not resolved (Hydra defaults or ``${...}`` interpolations left in it; ``hint`` is appended)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{where} must hold a mapping, got {type(config).__name__}")
    if "defaults" in config or any(isinstance(v, str) and "${" in v for v in config_leaves(config).values()):
        raise ValueError(f"{where} is not a resolved config (it has Hydra defaults or ${{...}} interpolations){hint}")
    return copy.deepcopy(dict(config))


def detect_run_kind(config: Mapping) -> str:
    """``"vta_run"`` for ``train_vta.py`` runs (Moving Shapes; either VTA variant, per
    ``vta.variant``), ``"agent"`` for ``train.py`` runs (Atari / gym with the DreamerV3 agent).

    Example:
        >>> detect_run_kind({"env": {}, "dynamics": {}, "agent": {}, "seed": 0})
        'agent'
        >>> detect_run_kind({"vta": {}, "data": {}})
        'vta_run'
        >>> detect_run_kind({"model": {}})  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: cannot tell what trained this run: config has top-level keys ['model'];
        expected train.py's (env, dynamics, agent, ...) or train_vta.py's
    """
    if "agent" in config and "dynamics" in config and "env" in config:
        return "agent"
    if "vta" in config and "data" in config:
        return "vta_run"
    raise ValueError(f"cannot tell what trained this run: config has top-level keys {sorted(config)}; "
                     f"expected train.py's (env, dynamics, agent, ...) or train_vta.py's")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=0.0", "d=[1,2]"]`` -> ``{"a.b": 1, "c": 0.0, "d": [1, 2]}`` (YAML values).

    A leading ``--`` is tolerated (``--dynamics.max_seg_len=50``); ``+key`` (add a key) is not.

    Example:
        >>> parse_overrides(["a.b=1", "--c=0.0", "d=[1, 2]", "e=pong"])
        {'a.b': 1, 'c': 0.0, 'd': [1, 2], 'e': 'pong'}
        >>> parse_overrides(["+a=1"])
        Traceback (most recent call last):
        ...
        ValueError: override '+a=1': only existing keys can be overridden (no +/~ prefixes)
    """
    out: dict[str, Any] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ValueError(f"override {item!r} must look like key=value (e.g. dynamics.max_seg_len=50)")
        key, raw = text.split("=", 1)
        key = key.strip()
        if not key or key.startswith(("+", "~")):
            raise ValueError(f"override {item!r}: only existing keys can be overridden (no +/~ prefixes)")
        if key in out:
            raise ValueError(f"override {key!r} given twice")
        out[key] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def apply_overrides(config: Mapping, overrides: Mapping[str, Any]) -> tuple[dict, list[tuple[str, Any, Any]]]:
    """Copy of ``config`` with dotted-key ``overrides`` applied.

    Returns:
        ``(new_config, changes)`` where ``changes`` lists ``(key, saved_value, new_value)``.

    Raises:
        ValueError: for a key that is not in the saved config, a key that names a whole group,
            or a key in :data:`SHAPE_CHANGING_KEYS` whose value differs.

    Example:
        >>> cfg = {"env": {"name": "atari"}, "dynamics": {"max_seg_len": 10}}
        >>> new, changes = apply_overrides(cfg, {"dynamics.max_seg_len": 50})
        >>> new["dynamics"], changes, cfg["dynamics"]  # the saved config is left as it was
        ({'max_seg_len': 50}, [('dynamics.max_seg_len', 10, 50)], {'max_seg_len': 10})
        >>> apply_overrides(cfg, {"max_seg_len": 50})
        Traceback (most recent call last):
        ...
        ValueError: override 'max_seg_len' is not a key of the saved config; did you mean dynamics.max_seg_len?
    """
    new = copy.deepcopy(dict(config))
    leaves = config_leaves(new)
    changes = []
    for key, value in overrides.items():
        if key not in leaves:
            near = sorted(k for k in leaves if k.split(".")[-1] == key.split(".")[-1])
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            group = any(k.startswith(key + ".") for k in leaves)
            what = "names a group, not a value" if group else "is not a key of the saved config"
            raise ValueError(f"override {key!r} {what}{hint}")
        old = leaves[key]
        if key in SHAPE_CHANGING_KEYS and value != old:
            raise ValueError(f"override {key}={value!r} refused: it changes the model's input shape "
                             f"(trained with {old!r})")
        node = new
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
        changes.append((key, old, value))
    return new, changes


def same_value_keys(leaves: Mapping[str, Any], key: str, value: Any) -> list[str]:
    """Other leaves holding ``value`` (possible ``${key}`` interpolation targets in a resolved
    config). Booleans, None, strings and the common numbers 0 and 1 are not reported."""
    if isinstance(value, (bool, str)) or value is None or value in (0, 1):
        return []
    return sorted(k for k, v in leaves.items() if k != key and type(v) is type(value) and v == value)
