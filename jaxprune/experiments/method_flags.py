"""Command-line flags for every pruning method's settings, made from the methods' dataclass fields.

A setting named the same in two methods is one flag. Flags default to None, meaning "the method's own default"
(listed in the help), so `--method=approx` runs with its recommended settings unless a flag overrides one. A flag
of another method is ignored with a warning (one flagfile serves every method of a comparison, e.g. the paper's
`--classifier`).
"""

from __future__ import annotations

import dataclasses
import typing

from absl import flags, logging

from jaxprune.pruning.methods import METHODS, make_method

_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string,
           bool: flags.DEFINE_bool}


def _settings() -> dict[str, list[tuple[str, dataclasses.Field, type]]]:
    """Setting name -> [(method, field, type)] over every registered method."""
    found: dict[str, list] = {}
    for name, cls in METHODS.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                found.setdefault(field.name, []).append((name, field, hints[field.name]))
    return found


def define_method_flags() -> None:
    for setting, owners in _settings().items():
        types = {kind for _, _, kind in owners}
        if len(types) != 1 or next(iter(types)) not in _DEFINE:
            raise TypeError(f"method setting {setting!r} has types {types}: one of int, float, str, bool needed")
        defaults = ", ".join(f"{method}: {field.default!r}" for method, field, _ in owners)
        _DEFINE[next(iter(types))](setting, None, f"Pruning method setting (defaults: {defaults}).")


def method_from_flags(name: str):
    """The method `name` with the settings given on the command line (ValueError on a bad value)."""
    settings = _settings()
    given = {setting: flags.FLAGS[setting].value for setting in settings if flags.FLAGS[setting].value is not None}
    own = {setting for setting, owners in settings.items() if any(method == name for method, _, _ in owners)}
    for setting in sorted(set(given) - own):
        logging.warning("--%s is not a setting of method %r; ignored", setting, name)
    return make_method(name, **{setting: value for setting, value in given.items() if setting in own})
