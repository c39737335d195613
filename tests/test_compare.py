import yaml

import json

from pipeline.compare import experiment_commands, experiment_rows, main, markdown
from pipeline.config import parse_params
from pipeline.network import PRESETS
from tests.helpers import ROOT


def apply_overrides(raw: dict, args: list[str]) -> dict:
    """What `dvc exp run -S key=value` does to params.yaml (values parsed as YAML, like Hydra)."""
    for key, value in (a.split("=", 1) for a in args[1::2]):
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        assert leaf in node, f"-S {key}: DVC refuses keys that params.yaml does not have"
        node[leaf] = yaml.safe_load(value)
    return raw


def test_every_experiment_is_a_valid_configuration_differing_in_cell_and_preset():
    commands = experiment_commands([*PRESETS, "default"])
    assert len(commands) == 2 * (len(PRESETS) + 1)
    seen = set()
    for cmd in commands:
        name = cmd[cmd.index("--name") + 1]
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        p = parse_params(apply_overrides(raw, cmd[cmd.index("--name") + 2:]))
        preset, cell = name.rsplit("-", 1)
        assert p.model == cell
        for key, value in PRESETS.get(preset, {}).items():
            assert getattr(p.rnn, key) == value
        seen.add(name)
    assert "advanced-gru" in seen and "default-lstm" in seen


def test_dry_run_prints_the_commands(capsys):
    assert main(["--presets", "basic", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dvc exp run --name basic-lstm -S model=lstm -S rnn.hidden_size=313" in out
    assert "dvc exp run --name basic-gru -S model=gru" in out


def test_table_from_dvc_exp_show_json():
    shown = [{"rev": "workspace", "name": None, "experiments": None},
             {"rev": "abc", "name": "main", "experiments": [
                 {"name": "basic-gru", "revs": [{"rev": "123456789", "name": "basic-gru", "data": {
                     "params": {"params.yaml": {"data": {"model": "gru"}}},
                     "metrics": {"metrics/eval.json": {"data": {"accuracy": 0.6, "macro_f1": 0.5, "params": 10}},
                                 "metrics/train.json": {"data": {"train_seconds": 12.5}}}}}]}]}]
    rows = experiment_rows(json.loads(json.dumps(shown)))
    assert rows == [{"experiment": "basic-gru", "model": "gru", "accuracy": 0.6, "balanced_accuracy": None,
                     "macro_f1": 0.5, "speaker_accuracy": None, "params": 10, "inference_clips_per_second": None,
                     "train_seconds": 12.5}]
    table = markdown(rows).splitlines()
    assert table[0].startswith("| experiment | model | accuracy |") and table[2].startswith("| basic-gru | gru | 0.6 |")
