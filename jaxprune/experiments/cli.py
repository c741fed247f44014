"""Running an experiment CLI so that a refused input ends in one line on stderr and exit status 2, not a traceback.

    if __name__ == "__main__":
        cli.run(main)

Refused inputs are the errors a user fixes by changing what they passed: any `ValueError` subclass defined in
jaxprune (the project's convention for input it refuses, with the file, line and field in the message: `RecordError`,
`ConfigError`, `CheckpointError`, `FlagError`, ...), and a file that is missing, unreadable, unwritable or of the wrong
kind. Anything else (a plain `ValueError` included) is a bug and keeps its traceback. `--verbosity=1` (absl's flag,
also `-v 1`) shows the traceback of a refused input too. absl's own usage errors (an unknown flag, a required flag
missing, `app.UsageError`) keep absl's behaviour: the help text and exit status 1.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from absl import app, flags

EXIT_REFUSED = 2  # what argparse and most Unix tools use for bad input; 1 stays absl's usage error

FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


class FlagError(ValueError):
    """A flag value the run cannot use; the message starts with `--name=value`."""


def is_refused_input(error: BaseException) -> bool:
    """True for the errors that mean "change your input", as opposed to a bug. The class test is by module, not a
    list, so that error classes added later (each stage has its own) are covered, and so that this module imports
    no JAX: the compare CLI runs without it. `__main__` counts as jaxprune: it is the CLI module itself under
    `python -m` (the pipeline's `StageError`)."""
    if isinstance(error, FILE_ERRORS):
        return True
    module = type(error).__module__
    return isinstance(error, ValueError) and (module.startswith("jaxprune.") or module == "__main__")


def one_line(error: BaseException) -> str:
    """The error as one line: an OS error as `path: reason` (not `[Errno 2] ...: 'path'`), others as their message
    with any line breaks folded."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
        if error.filename2 is not None:
            text += f" ({error.filename2})"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _program() -> str:
    """`prune` for `python -m jaxprune.experiments.prune` (sys.argv[0] is then the module's file)."""
    return os.path.splitext(os.path.basename(sys.argv[0]))[0] or "jaxprune"


def guarded(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
    """`main` with refused inputs reported in one line and exit status 2 (unless --verbosity >= 1)."""

    @functools.wraps(main)
    def run_main(argv):
        try:
            return main(argv)
        except Exception as error:  # noqa: BLE001  (re-raised unless it is a refused input)
            if not is_refused_input(error) or flags.FLAGS["verbosity"].value >= 1:
                raise
            sys.stdout.flush()  # so that the error is the last thing a terminal shows
            print(f"{_program()}: error: {one_line(error)} (--verbosity=1 shows the traceback)", file=sys.stderr)
            sys.exit(EXIT_REFUSED)

    return run_main


def run(main: Callable[[list[str]], object]) -> None:
    """`absl.app.run(main)`, with refused inputs handled by `guarded`."""
    app.run(guarded(main))
