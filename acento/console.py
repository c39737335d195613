"""Command-line plumbing shared by the stages and the tools: progress bars, and the stage wrapper that
turns expected failures into one line on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from acento.config import PARAMS_FILE, ConfigError, Params, load_params
from acento.errors import StageError


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm progress bar on a terminal, and none when stderr is a file or pipe (`dvc repro` in CI
    or into a log), where carriage-return updates would fill the log; stages print their own summary
    lines for those."""
    return tqdm(iterable, disable=None, **kwargs)


def run_stage(doc: str, run: Callable[[Params, argparse.Namespace], None],
              add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
              argv: list[str] | None = None) -> int:
    """A stage's command line: parses `--params` and the stage's options, loads the parameters once,
    runs the stage, and turns expected failures into one line on stderr; returns the exit status.

    Every stage module's `main(argv) -> int` is this call, as every tool's `main(argv) -> int` is
    its own argument parsing, so any module runs the same way: `sys.exit(main())`.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=PARAMS_FILE, help=f"parameters file (default: {PARAMS_FILE})")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(load_params(args.params), args)
    except (ConfigError, StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if getattr(exc, "hard_exit", False):  # a library left in a state it cannot tear down (a full disk)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no partial output was left at the output paths", file=sys.stderr)
        return 130
    return 0
