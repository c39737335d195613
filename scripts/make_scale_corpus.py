"""A Common Voice release of real size and shape, made in seconds from the bundled sample's clips.

`make scale-corpus CLIPS=100000` writes data/scale/cv-corpus-scale-100000/es/ in the Common Voice 16.x
layout (../shared/common-voice-format.md): `validated.tsv` with CLIPS rows, `other.tsv` (2.5x),
`invalidated.tsv` (0.15x), `reported.tsv` (empty), `train.tsv`/`dev.tsv`/`test.tsv` (speaker-disjoint
parts of validated.tsv, as a full release has), `clip_durations.tsv`, and `clips/`: no new audio, every
clip is a new name (common_voice_es_<n>.mp3) hard-linked to one of the sample's MP3s, of the same accent
class where the sample has one, with that file's duration (a file system without hard links between the
two folders gets symbolic links, with a warning).  It measures what size costs (`prepare`, `features`,
the folds' balance); it teaches nothing about accents that the sample's ~1,000 clips do not.

The shape follows Common Voice 16.1 Spanish (405,662 validated clips, 25,695 speakers):
- speakers: one per 15.79 validated clips (405,662 / 25,695);
- clips per speaker (`--zipf`, `--zipf-offset`, `--jitter`): the speaker of rank r gets a weight
  (r + 4)^-1.0 (Zipf-Mandelbrot) times a seeded lognormal factor exp(0.3 z), z ~ N(0, 1); counts are the
  weights scaled to CLIPS, at least 1 each.  At the full size (405,662) that is a top speaker with ~24,000
  clips (~6%), ~40 speakers with 1,000 or more, a median of 3; at 40,000 clips the top speaker holds ~7%
  (~2,800), at 2,000 ~10%;
- accents (`--accent-share`): whole speakers, in seeded order, give an accent until 37% of the validated
  clips carry one (~150,000 of 405,000 in the real release); the rest leave `accents` empty.  A speaker's
  accent field is drawn with Common Voice 11.0 Spanish's class counts (Sur 38,251 ... Canarias 1,326,
  the format notes) and, within a class, as often as the sample's fields of that class (the bare preset,
  or the preset then free text after a `,`, the 16.x separator); 0.4% two presets of different classes
  and 0.8% free text only, the sample's shares.  Centro-Sur, Canarias and América central, which the
  sample's classes leave out, stay in (`prepare` drops them as unmapped accents, as on a real release);
  their clips, like the unaccented ones, link any sample clip;
- votes: 5% of validated rows carry one down vote (`--down-share`; up_votes 2 + down_votes); other.tsv
  rows have under two votes, invalidated.tsv rows two or three down votes and fewer up votes;
  other.tsv and invalidated.tsv have speakers of their own, of the same shape;
- dev.tsv and test.tsv: about 4% of the validated clips each, from the least prolific speakers (seeded
  order among equals), train.tsv the rest: no speaker in two of them.

Seeded (`--seed`) and deterministic: the same arguments give the same bytes in every TSV.

  python scripts/make_scale_corpus.py --clips 40000 --out data/scale
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "cv-corpus-sample-es.tar.gz"
COLUMNS = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "variant",
           "locale", "segment"]
CLIPS_PER_SPEAKER = 405_662 / 25_695  # Common Voice 16.1 Spanish
FIRST_ID = 50_000_000  # synthetic clip numbers, clear of the sample's (39,0xx,xxx)
DEV_TEST_SHARE = 0.04  # of the validated clips, for each of dev.tsv and test.tsv
OTHER_SHARE, INVALIDATED_SHARE = 2.5, 0.15  # rows of other.tsv and invalidated.tsv per validated row
# Clips with that single preset in Common Voice 11.0 Spanish (../shared/common-voice-format.md).
REAL_CLASS_CLIPS = {
    "España: Sur peninsular (Andalucia, Extremadura, Murcia)": 38_251,
    "España: Norte peninsular (Asturias, Castilla y León, Cantabria, País Vasco, Navarra, Aragón, La Rioja, "
    "Guadalajara, Cuenca)": 30_588,
    "México": 26_136,
    "Andino-Pacífico: Colombia, Perú, Ecuador, oeste de Bolivia y Venezuela andina": 12_997,
    "Rioplatense: Argentina, Uruguay, este de Bolivia, Paraguay": 11_162,
    "España: Centro-Sur peninsular (Madrid, Toledo, Castilla-La Mancha)": 8_683,
    "Caribe: Cuba, Venezuela, Puerto Rico, República Dominicana, Panamá, Colombia caribeña, México caribeño, "
    "Costa del golfo de México": 8_329,
    "América central": 6_031,
    "Chileno: Chile, Cuyo": 4_285,
    "España: Islas Canarias": 1_326,
}
ANY = "*"  # the pool of every sample clip


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def zipf_counts(total: int, speakers: int, exponent: float, offset: float, jitter: float,
                rng: np.random.Generator) -> np.ndarray:
    """Clips per speaker, largest first: weights (rank + offset)^-exponent (Zipf-Mandelbrot) times
    exp(jitter * N(0, 1)), scaled to `total`, at least 1 each, summing to `total` exactly."""
    ranks = np.arange(1, speakers + 1, dtype=np.float64)
    weights = (ranks + offset) ** -exponent * np.exp(jitter * rng.standard_normal(speakers))
    counts = np.maximum(1, np.floor(total * weights / weights.sum()).astype(np.int64))
    counts = np.sort(counts)[::-1].copy()
    counts[0] += total - counts.sum()  # the rounding's remainder goes to (or comes from) the top speaker
    if counts[0] < 1:
        raise ValueError(f"{total} clips cannot give {speakers} speakers one clip each")
    return counts


@lru_cache(maxsize=None)
def pool_key(field: str) -> str:
    """The sample clips an accent field links: its one preset's, or (two presets, or free text only) its own."""
    from acento.corpus.records import SPANISH_PRESETS, split_accents

    presets = [a for a in split_accents(field) if a in SPANISH_PRESETS]
    return presets[0] if len(presets) == 1 else field


def accent_table(sample: list[dict]) -> tuple[list[str], np.ndarray]:
    """The accent fields speakers may give and their probabilities: Common Voice 11.0's class shares,
    the sample's fields within a class, and the sample's shares of two-preset and free-text-only fields."""
    fields: dict[str, int] = defaultdict(int)
    for row in sample:
        if row["accents"]:
            fields[row["accents"]] += 1
    by_class: dict[str, dict[str, int]] = defaultdict(dict)
    for field, n in fields.items():
        key = pool_key(field)
        by_class[key if key in REAL_CLASS_CLIPS else "other"][field] = n
    accented = sum(fields.values())
    odd = sum(by_class["other"].values()) / accented
    real_total = sum(REAL_CLASS_CLIPS.values())
    names, probs = [], []
    for preset, real in REAL_CLASS_CLIPS.items():
        within = by_class.get(preset) or {preset: 1}  # a preset the sample lacks: written bare
        for field, n in sorted(within.items()):
            names.append(field)
            probs.append((1 - odd) * real / real_total * n / sum(within.values()))
    for field, n in sorted(by_class["other"].items()):
        names.append(field)
        probs.append(n / accented)
    probs = np.array(probs)
    return names, probs / probs.sum()


def speaker_id(seed: int, part: str, i: int) -> str:
    """A 128-hex-digit client_id, as Common Voice's."""
    return hashlib.sha512(f"acento-scale|{seed}|{part}|{i}".encode()).hexdigest()


class Release:
    """Writes one release; `new_clip` links a sample file under the next clip name."""

    def __init__(self, out: Path, sample_dir: Path, seed: int):
        self.out, self.sample_dir, self.seed = out, sample_dir, seed
        self.rng = np.random.default_rng(seed)
        sample = read_tsv(sample_dir / "validated.tsv")
        self.durations = {r["clip"]: r["duration[ms]"] for r in read_tsv(sample_dir / "clip_durations.tsv")}
        sample = [r for r in sample if r["path"] in self.durations]
        self.fields, self.field_probs = accent_table(sample)
        self.pools: dict[str, list[dict]] = defaultdict(list)
        for row in sample:
            self.pools[ANY].append(row)
            if row["accents"]:
                self.pools[pool_key(row["accents"])].append(row)
        self.templates = sample  # age and gender per speaker come from a sample row
        self.number = FIRST_ID
        self.duration_lines = ["clip\tduration[ms]"]
        self.link, self.linked_by, self.links = os.link, "hard links", 0
        (out / "clips").mkdir(parents=True)

    def new_clip(self, source: dict) -> str:
        name = f"common_voice_es_{self.number}.mp3"
        self.number += 1
        src, dst = self.sample_dir / "clips" / source["path"], self.out / "clips" / name
        try:
            self.link(src, dst)
            self.links += 1
        except FileNotFoundError:
            pass  # one of the sample's deliberately missing clips: missing here too, as `prepare` expects
        except OSError:
            if self.link is os.symlink:
                raise
            print("warning: hard links failed here; the clips are symbolic links to the sample's", file=sys.stderr)
            self.link, self.linked_by = os.symlink, "symbolic links"
            os.symlink(src.resolve(), dst)
            self.links += 1
        self.duration_lines.append(f"{name}\t{self.durations[source['path']]}")
        return name

    def speakers(self, part: str, clips: int, args: argparse.Namespace) -> list[tuple[str, str, dict, int]]:
        """(client_id, accent field, template row, clips) per speaker, most prolific first."""
        n = min(clips, max(2, round(clips / CLIPS_PER_SPEAKER)))
        counts = zipf_counts(clips, n, args.zipf, args.zipf_offset, args.jitter, self.rng)
        target, given = round(args.accent_share * clips), 0
        accented = np.zeros(n, dtype=bool)
        for i in self.rng.permutation(n):  # whole speakers, in seeded order, until the share is reached
            if given + counts[i] <= target:
                accented[i], given = True, given + counts[i]
        chosen = self.rng.choice(len(self.fields), size=n, p=self.field_probs)
        templates = self.rng.integers(0, len(self.templates), n)
        return [(speaker_id(self.seed, part, i), self.fields[chosen[i]] if accented[i] else "",
                 self.templates[templates[i]], int(counts[i])) for i in range(n)]

    def rows(self, speakers: list[tuple[str, str, dict, int]], votes: np.ndarray) -> list[tuple[str, str]]:
        """(client_id, TSV line) per clip; votes: (up, down) per clip in order."""
        lines, k = [], 0
        for speaker, accent, template, n in speakers:
            pool = self.pools.get(pool_key(accent)) if accent else None
            pool = pool or self.pools[ANY]  # no accent, or a preset the sample lacks: any clip
            for j in self.rng.integers(0, len(pool), n):
                source = pool[j]
                up, down = votes[k]
                k += 1
                lines.append((speaker, "\t".join([
                    speaker, self.new_clip(source), source["sentence"], str(up), str(down), template["age"],
                    template["gender"], accent, "", "es", ""])))
        return lines


def votes(kind: str, n: int, down_share: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "validated":  # up >= 2 and up > down
        down = (rng.random(n) < down_share).astype(np.int64)
        return np.stack([2 + down, down], axis=1)
    if kind == "other":  # fewer than two votes: none (70%), one up (20%), one down (10%)
        draw = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
        return np.stack([(draw == 1).astype(np.int64), (draw == 2).astype(np.int64)], axis=1)
    down = rng.integers(2, 4, n)  # invalidated: two or three down votes, fewer up votes
    return np.stack([rng.integers(0, 2, n) * (down - 1), down], axis=1)


def splits(speakers: list[tuple[str, str, dict, int]], clips: int, rng: np.random.Generator) -> dict[str, str]:
    """dev and test: about DEV_TEST_SHARE of the clips each, least prolific speakers first; train the rest."""
    order = rng.permutation(len(speakers))
    order = sorted(order, key=lambda i: speakers[i][3])  # stable: seeded order among equal counts
    part, got, assignment = "test", 0, {}
    for i in order:
        if part != "train" and got >= DEV_TEST_SHARE * clips:
            part, got = ("dev" if part == "test" else "train"), 0
        assignment[speakers[i][0]] = part
        got += speakers[i][3]
    return assignment


def write_release(out: Path, sample_dir: Path, args: argparse.Namespace) -> dict:
    release = Release(out, sample_dir, args.seed)
    header = "\t".join(COLUMNS)
    counts: dict[str, int] = {}
    validated_speakers: list = []
    for name, kind, clips in (("validated.tsv", "validated", args.clips),
                              ("other.tsv", "other", round(OTHER_SHARE * args.clips)),
                              ("invalidated.tsv", "invalidated", round(INVALIDATED_SHARE * args.clips))):
        speakers = release.speakers(kind, clips, args) if clips else []
        lines = release.rows(speakers, votes(kind, clips, args.down_share, release.rng))
        (out / name).write_text("\n".join([header, *(line for _, line in lines)]) + "\n", encoding="utf-8")
        counts[kind] = len(lines)
        if kind == "validated":
            validated_speakers, validated = speakers, lines
    assignment = splits(validated_speakers, args.clips, release.rng)
    for part in ("train", "dev", "test"):
        chosen = [line for speaker, line in validated if assignment[speaker] == part]
        (out / f"{part}.tsv").write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
        counts[part] = len(chosen)
    (out / "reported.tsv").write_text("sentence_id\tsentence\tlocale\treason\n", encoding="utf-8")
    (out / "clip_durations.tsv").write_text("\n".join(release.duration_lines) + "\n", encoding="utf-8")
    return {**counts, "speakers": len(validated_speakers), "top_speaker": validated_speakers[0][3],
            "with_accent": sum(n for _, accent, _, n in validated_speakers if accent),
            "files": release.links, "linked_by": release.linked_by}


def sample_release(scratch: Path) -> Path:
    """The bundled sample's locale folder, extracted once into `scratch` (beside the output, so the hard
    links stay on one file system)."""
    from acento.corpus.release import extract_release

    return extract_release(SAMPLE, scratch, "es")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40_000, help="validated clips (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "scale",
                        help="folder for the release: OUT/cv-corpus-scale-CLIPS/es (default: data/scale)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (default: %(default)s)")
    parser.add_argument("--zipf", type=float, default=1.0,
                        help="exponent s of the speakers' weights (rank + q)^-s (default: %(default)s)")
    parser.add_argument("--zipf-offset", type=float, default=4.0,
                        help="offset q of the speakers' weights (rank + q)^-s (default: %(default)s)")
    parser.add_argument("--jitter", type=float, default=0.3,
                        help="sigma of the lognormal factor on each speaker's weight (default: %(default)s)")
    parser.add_argument("--accent-share", type=float, default=0.37,
                        help="share of validated clips whose speaker gives an accent (default: %(default)s)")
    parser.add_argument("--down-share", type=float, default=0.05,
                        help="share of validated clips with one down vote (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace a release already at the output path")
    args = parser.parse_args(argv)
    if args.clips < 2 or not 0 <= args.accent_share <= 1 or not 0 <= args.down_share <= 1 or args.zipf < 0 \
            or args.zipf_offset < 0 or args.jitter < 0:
        parser.error("--clips must be >= 2, --accent-share and --down-share in [0, 1], "
                     "--zipf, --zipf-offset and --jitter >= 0")
    locale = args.out / f"cv-corpus-scale-{args.clips}" / "es"
    if locale.exists() and any(locale.iterdir()) and not args.force:
        print(f"error: {locale} exists and is not empty; pass --force to replace it", file=sys.stderr)
        return 2
    if locale.exists():
        shutil.rmtree(locale)
    start = time.perf_counter()
    counts = write_release(locale, sample_release(args.out / ".sample"), args)
    print(f"{locale}: {counts['validated']} validated clips of {counts['speakers']} speakers (largest "
          f"{counts['top_speaker']}; {counts['with_accent']} with an accent), train/dev/test {counts['train']}/"
          f"{counts['dev']}/{counts['test']}, {counts['other']} other, {counts['invalidated']} invalidated; "
          f"{counts['files']} files as {counts['linked_by']} to the sample's, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
