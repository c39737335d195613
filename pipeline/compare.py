"""LSTM against GRU in each model preset, as DVC experiments, summarised in one table.

Presets are overrides of the `rnn` section (`pipeline.network.PRESETS`: the original study's basic,
deep and advanced models) plus `default`, the configuration in params.yaml.  Every run shares the
same data, features and seed, so the cell and the preset are the only differences.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from pipeline.network import PRESETS

CELLS = ("lstm", "gru")
RESTORED = ["params.yaml", "dvc.lock", "metrics"]
EVAL = ("accuracy", "balanced_accuracy", "macro_f1", "speaker_accuracy", "params", "inference_clips_per_second")


def overrides(preset: str, cell: str) -> list[str]:
    args = ["-S", f"model={cell}"]
    for key, value in PRESETS.get(preset, {}).items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        args += ["-S", f"rnn.{key}={text}"]
    return args


def experiment_commands(presets: list[str]) -> list[list[str]]:
    return [["dvc", "exp", "run", "--name", f"{preset}-{cell}", *overrides(preset, cell)]
            for preset in presets for cell in CELLS]


def experiment_rows(exp_show: list[dict]) -> list[dict]:
    """The columns that matter, from `dvc exp show --json`, for every experiment of the baseline."""
    rows = []
    for baseline in exp_show:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            metrics = data.get("metrics") or {}
            evaluation = metrics.get("metrics/eval.json", {}).get("data", {})
            training = metrics.get("metrics/train.json", {}).get("data", {})
            model = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("model")
            rows.append({"experiment": exp.get("name") or rev.get("name") or rev["rev"][:7], "model": model,
                         **{k: evaluation.get(k) for k in EVAL}, "train_seconds": training.get("train_seconds")})
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no experiments)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if r[h] is None else str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


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
        # `dvc exp run` leaves its parameters in the workspace; start each one from HEAD's.
        subprocess.run(["git", "checkout", "HEAD", "--", "params.yaml"], check=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"error: experiment {name} failed; see the output above", file=sys.stderr)
            return 1
    if args.dry_run:
        return 0
    # Each `dvc exp run` leaves its results in the workspace; put HEAD's back.
    subprocess.run(["git", "checkout", "HEAD", "--", *RESTORED], check=True)
    subprocess.run(["dvc", "checkout", "--quiet"], check=False)
    shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=True)
    names = {cmd[cmd.index("--name") + 1] for cmd in commands}
    print(markdown([r for r in experiment_rows(json.loads(shown.stdout)) if r["experiment"] in names]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
