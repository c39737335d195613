"""LSTM against GRU in each model preset, as DVC experiments, summarised in one table.

Presets are overrides of the `rnn` section (`pipeline.models.PRESETS`: the original study's basic,
deep and advanced models) plus `default`, the configuration in params.yaml.  Every run shares the
same data, features and seed, so the cell and the preset are the only differences.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from pipeline.models import PRESETS

CELLS = ("lstm", "gru")
RESTORED = ["params.yaml", "dvc.lock", "metrics"]
COLUMNS = ["Experiment", "params.yaml:model", "metrics/eval.json:accuracy", "metrics/eval.json:balanced_accuracy",
           "metrics/eval.json:macro_f1", "metrics/eval.json:speaker_accuracy", "metrics/eval.json:params",
           "metrics/train.json:train_seconds", "metrics/eval.json:inference_clips_per_second"]


def overrides(preset: str, cell: str) -> list[str]:
    args = ["-S", f"model={cell}"]
    for key, value in PRESETS.get(preset, {}).items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        args += ["-S", f"rnn.{key}={text}"]
    return args


def experiment_commands(presets: list[str]) -> list[list[str]]:
    return [["dvc", "exp", "run", "--name", f"{preset}-{cell}", *overrides(preset, cell)]
            for preset in presets for cell in CELLS]


def table_command() -> list[str]:
    keep = "|".join(c.replace(".", r"\.") for c in COLUMNS)
    return ["dvc", "exp", "show", "--md", "--drop", ".*", "--keep", f"^({keep})$"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=[*PRESETS, "default"],
                        choices=[*PRESETS, "default"], help="presets to run (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc commands instead of running them")
    args = parser.parse_args(argv)
    commands = experiment_commands(args.presets)
    if not args.dry_run and subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *RESTORED]).returncode != 0:
        print(f"error: {', '.join(RESTORED)} differ from HEAD; commit or stash them first, since the "
              "experiments run in the workspace and it is restored to HEAD afterwards", file=sys.stderr)
        return 2
    for cmd in commands:
        print("$", " ".join(cmd), flush=True)
        if args.dry_run:
            continue
        name = cmd[cmd.index("--name") + 1]
        subprocess.run(["dvc", "exp", "remove", name], capture_output=True)  # rerun replaces an old one
        if subprocess.run(cmd).returncode != 0:
            print(f"error: experiment {name} failed; see the output above", file=sys.stderr)
            return 1
    print("$", " ".join(table_command()), flush=True)
    if args.dry_run:
        return 0
    status = subprocess.run(table_command()).returncode
    # Each `dvc exp run` leaves its results in the workspace; put HEAD's back.
    subprocess.run(["git", "checkout", "HEAD", "--", *RESTORED], check=True)
    subprocess.run(["dvc", "checkout", "--quiet"], check=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
