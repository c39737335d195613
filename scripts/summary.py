"""What `make run` prints at its end: the run's result in lines of at most 80 characters.

Reads the pipeline's small outputs (data/release.json, metrics/data.json, metrics/eval.json); the full
metrics are in metrics/*.json (`dvc metrics show`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summary(root: Path = Path(".")) -> list[str]:
    release = json.loads((root / "data/release.json").read_text(encoding="utf-8"))
    data = json.loads((root / "metrics/data.json").read_text(encoding="utf-8"))
    ev = json.loads((root / "metrics/eval.json").read_text(encoding="utf-8"))
    clips = sum(sum(part.values()) for part in data["clips"].values())
    speakers = sum(sum(part.values()) for part in data["speakers"].values())
    classes = sorted({c for part in data["clips"].values() for c in part})
    lines = [
        f"Release: {release['release']}/{release['locale']}, {release['clips']} clips in",
        f"  {release['root']}/clips",
        f"Kept: {clips} clips of {speakers} speakers, {len(classes)} classes",
        f"Model: {ev.get('model', '?')} -> models/model.pt",
        f"Test fold (unseen speakers, {ev['clips']} clips, {ev['speakers']} speakers):",
        f"  accuracy {ev['accuracy']:.3f}, balanced {ev['balanced_accuracy']:.3f}, "
        f"macro-F1 {ev['macro_f1']:.3f},",
        f"  speaker accuracy {ev['speaker_accuracy']:.3f} (chance {1 / len(classes):.3f})",
        "More: dvc metrics show; acento-predict CLIP; docs/pipeline.md",
    ]
    return lines


def main() -> int:
    try:
        lines = summary()
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: no pipeline result to summarise ({exc}); run `dvc repro` first", file=sys.stderr)
        return 2
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
