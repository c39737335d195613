"""Atomic outputs and the command-line wrapper every stage shares.

A stage killed halfway must leave nothing at its output path that DVC or the next stage could take
for a finished result, so every output is written to a temporary sibling and renamed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import PARAMS_FILE, ConfigError, Params, load_params
from pipeline.errors import StageError


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm progress bar on a terminal, and none when stderr is a file or pipe (`dvc repro` in CI
    or into a log), where carriage-return updates would fill the log; stages print their own summary
    lines for those."""
    return tqdm(iterable, disable=None, **kwargs)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
        return 2
    except KeyboardInterrupt:
        print("interrupted: no partial output was left at the output paths", file=sys.stderr)
        return 130
    return 0
