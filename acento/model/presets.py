"""The original study's networks (`basic`, `deep`, `advanced`) as values of params.yaml's `rnn` section.

`make compare-all` (`acento.evaluation.compare --presets`) and the ablation (`scripts/ablate.py`) run them
beside params.yaml's own network (`default`); docs/study.md has their cross-validated scores.
"""

from __future__ import annotations

from typing import Any

# The original study's models, as values of the `rnn` section (`make compare-all`, README).
PRESETS: dict[str, dict[str, Any]] = {
    "basic": {"hidden_size": 313, "num_layers": 1, "bidirectional": False, "dropout": 0.0, "pooling": "last",
              "frontend": "none", "head_hidden": [], "head_dropout": 0.0},
    "deep": {"hidden_size": 313, "num_layers": 2, "bidirectional": False, "dropout": 0.4, "pooling": "last",
             "frontend": "none", "head_hidden": [], "head_dropout": 0.0},
    "advanced": {"hidden_size": 313, "num_layers": 2, "bidirectional": False, "dropout": 0.4, "pooling": "last",
                 "frontend": "none", "head_hidden": [156, 78], "head_dropout": 0.2},
}


def preset_overrides(preset: str) -> dict[str, Any]:
    """The dotted overrides (`rnn.hidden_size` -> 313, ...) of one of PRESETS; {} for "default"
    (params.yaml as it is).  `compare` passes them to `dvc exp run -S`, `ablate` to apply_overrides."""
    return {f"rnn.{key}": value for key, value in PRESETS.get(preset, {}).items()}
