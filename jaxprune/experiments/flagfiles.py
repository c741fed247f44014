"""Reading absl flagfiles as data (a tool that checks another CLI's settings without defining that CLI's flags)."""

from __future__ import annotations

import os

from jaxprune.data.records import RecordError


def read_flagfile(path: str) -> dict[str, str]:
    """`--name=value` lines of an absl flagfile (comments and blank lines skipped, nested `--flagfile=` read in
    place, later values win); a malformed line is an error naming the file and line."""
    if not os.path.isfile(path):
        raise RecordError(f"{path}: no such flagfile")
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(("#", "//")):
                continue
            if not line.startswith("--"):
                raise RecordError(f"{path}:{number}: expected --name=value, got {line!r}")
            name, sep, value = line[2:].partition("=")
            if name == "flagfile":
                values.update(read_flagfile(value))
            elif name.startswith("no") and not sep:
                values[name[2:]] = "false"
            else:
                values[name] = value if sep else "true"
    return values
