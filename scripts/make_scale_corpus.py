"""A Common Voice release of real size and shape, made in seconds from the bundled sample's clips.

`make scale-corpus CLIPS=100000` writes data/scale/cv-corpus-scale-100000/es/: `validated.tsv` with CLIPS rows
(Common Voice 16.x columns), `other.tsv` (2.5x), `invalidated.tsv` (0.15x), `reported.tsv` and
`clip_durations.tsv`, and `clips/`, whose files are hard links to the sample's MP3s (no new audio, no
disk: a file system without hard links across the two folders gets symbolic links, with a warning).

The shape follows Common Voice 16.1 Spanish (405,662 validated clips of 25,695 speakers,
../shared/common-voice-format.md): one speaker per 15.8 clips; clips per speaker Zipf-distributed
(the speaker of rank r records in proportion to 1/r, at least one clip), so a few speakers hold thousands of
clips and most a handful; 37% of the speakers (`--accent-share`) give an accent, drawn from the sample's
speakers' accent fields (presets, `,`-joined mixtures, free text), and each of their clips links a sample
clip of that accent; 3% of validated rows carry a down vote. Seeded (`--seed`) and deterministic. It is
what the size figures of docs/benchmarks.md are measured on; it teaches nothing about accents that the
sample does not (every clip is one of the sample's ~1,000).

  python scripts/make_scale_corpus.py --clips 40000 --out data/scale
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

COLUMNS = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "variant",
           "locale", "segment"]
SPEAKERS_PER_CLIP = 25_695 / 405_662  # Common Voice 16.1 Spanish
FIRST_ID = 50_000_000  # synthetic clip numbers: common_voice_es_<n>.mp3, clear of the sample's
SAMPLE = Path("data/sample/cv-corpus-sample-es.tar.gz")


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def zipf_counts(total: int, speakers: int) -> np.ndarray:
    """Clips per speaker, by rank: proportional to 1/rank, at least 1 each, summing to `total`."""
    weights = 1.0 / np.arange(1, speakers + 1)
    counts = np.maximum(1, np.floor(total * weights / weights.sum()).astype(np.int64))
    counts[0] += total - counts.sum()  # the remainder to the most prolific speaker
    return counts


def sample_release(scratch: Path) -> Path:
    """The bundled sample's locale folder, extracted once into `scratch`."""
    from acento.corpus.release import extract_release

    return extract_release(SAMPLE, scratch, "es")


def plan(clips: int, accent_share: float, sample: list[dict], rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """(speaker id, accent field, clips) per speaker of the validated rows."""
    accents = [row["accents"] for row in sample if row["accents"]]
    n_speakers = max(2, int(round(clips * SPEAKERS_PER_CLIP)))
    counts = zipf_counts(clips, n_speakers)
    has_accent = rng.random(n_speakers) < accent_share
    chosen = rng.integers(0, len(accents), n_speakers)
    ids = [f"{rng.integers(0, 2 ** 63):016x}{i:016x}".ljust(128, "0") for i in range(n_speakers)]
    return [(ids[i], accents[chosen[i]] if has_accent[i] else "", int(counts[i])) for i in range(n_speakers)]


def write_release(out: Path, clips: int, accent_share: float, seed: int, sample_dir: Path) -> dict:
    rng = np.random.default_rng(seed)
    sample = read_tsv(sample_dir / "validated.tsv")
    durations = {row["clip"]: row["duration[ms]"] for row in read_tsv(sample_dir / "clip_durations.tsv")}
    by_accent: dict[str, list[dict]] = defaultdict(list)
    for row in sample:
        if row["path"] in durations:
            by_accent[row["accents"]].append(row)
    every = [row for rows in by_accent.values() for row in rows]
    (out / "clips").mkdir(parents=True)
    link, linked_by = os.link, "hard links"
    number, duration_lines = FIRST_ID, ["clip\tduration[ms]"]

    def new_clip(source: dict) -> str:
        nonlocal number, link, linked_by
        name = f"common_voice_es_{number}.mp3"
        number += 1
        try:
            link(sample_dir / "clips" / source["path"], out / "clips" / name)
        except FileNotFoundError:
            pass  # the sample's deliberately missing clip: missing here too, as `prepare` expects
        except OSError:
            if link is os.symlink:
                raise
            print("warning: no hard links here; the clips are symbolic links to the sample's", file=sys.stderr)
            link, linked_by = os.symlink, "symbolic links"
            link((sample_dir / "clips" / source["path"]).resolve(), out / "clips" / name)
        duration_lines.append(f"{name}\t{durations[source['path']]}")
        return name

    def rows(speaker: str, accent: str, n: int, down_share: float) -> list[str]:
        pool = by_accent.get(accent) or every
        out_rows = []
        for k in rng.integers(0, len(pool), n):
            source = pool[k]
            down = int(rng.random() < down_share)
            out_rows.append("\t".join([speaker, new_clip(source), source["sentence"], str(2 + down), str(down),
                                       source["age"], source["gender"], accent, "", "es", ""]))
        return out_rows

    validated = [r for speaker, accent, n in plan(clips, accent_share, sample, rng) for r in rows(speaker, accent, n, 0.03)]
    others = {name: [r for speaker, accent, n in plan(int(clips * share), accent_share, sample, rng)
                     for r in rows(speaker, accent, n, down)]
              for name, share, down in (("other.tsv", 2.5, 0.0), ("invalidated.tsv", 0.15, 1.0))}
    header = "\t".join(COLUMNS)
    for name, lines in (("validated.tsv", validated), *others.items(), ("reported.tsv", [])):
        (out / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    (out / "clip_durations.tsv").write_text("\n".join(duration_lines) + "\n", encoding="utf-8")
    with_accent = sum(1 for line in validated if line.split("\t")[7])
    return {"validated": len(validated), "other": len(others["other.tsv"]),
            "invalidated": len(others["invalidated.tsv"]), "speakers": len({line[:128] for line in validated}),
            "with_accent": with_accent, "clips_linked": sum(1 for _ in (out / "clips").iterdir()), "linked_by": linked_by}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40_000, help="validated clips (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("data/scale"), help="folder for the release (default: data/scale)")
    parser.add_argument("--accent-share", type=float, default=0.37,
                        help="share of speakers who give an accent (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace a release already at the output path")
    args = parser.parse_args(argv)
    if args.clips < 2 or not 0 <= args.accent_share <= 1:
        parser.error("--clips must be >= 2 and --accent-share in [0, 1]")
    locale = args.out / f"cv-corpus-scale-{args.clips}" / "es"
    if locale.exists():
        if not args.force:
            print(f"error: {locale} exists; pass --force to replace it", file=sys.stderr)
            return 2
        shutil.rmtree(locale)
    start = time.perf_counter()
    sample_dir = sample_release(args.out / ".sample")
    counts = write_release(locale, args.clips, args.accent_share, args.seed, sample_dir)
    print(f"{locale}: {counts['validated']} validated clips of {counts['speakers']} speakers "
          f"({counts['with_accent']} with an accent), {counts['other']} other, {counts['invalidated']} invalidated; "
          f"{counts['clips_linked']} clips as {counts['linked_by']} to the sample's, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
