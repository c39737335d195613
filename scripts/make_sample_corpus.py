"""Build the bundled synthetic corpus in the exact Common Voice 16.1 layout.

Why synthetic: Common Voice cannot be downloaded offline, yet `dvc repro` must work on a fresh
machine.  espeak-ng has two Spanish voices whose differences are the segmental ones a real accent
classifier has to find: `es` (Spain) pronounces c/z as /θ/ and ll as /ʎ/; `es-419` (Latin America)
says /s/ and /ʝ/.  Every voice variant, pitch, speed and "microphone" is drawn independently of the
accent, so those speaker traits are nuisance, as in real data, and only unseen-speaker accuracy
means anything.

Requires Debian's espeak-ng and sox (with libsox-fmt-mp3):
    apt-get install espeak-ng sox libsox-fmt-mp3
    python scripts/make_sample_corpus.py            # rewrites data/sample/cv-corpus-sample-es.tar.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

RELEASE = "cv-corpus-acento-sample-1.0"
LOCALE = "es"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "sample" / "cv-corpus-sample-es.tar.gz"

SPAIN_PRESETS = [
    "España: Norte peninsular (Asturias, Castilla y León, Cantabria, País Vasco, Navarra, Aragón, "
    "La Rioja, Guadalajara, Cuenca)",
    "España: Centro-Sur peninsular (Madrid, Toledo, Castilla-La Mancha)",
]
AMERICA_PRESETS = [
    "México",
    "Andino-Pacífico: Colombia, Perú, Ecuador, oeste de Bolivia y Venezuela andina",
    "Rioplatense: Argentina, Uruguay, este de Bolivia, Paraguay",
    "Caribe: Cuba, Venezuela, Puerto Rico, República Dominicana, Panamá, Colombia caribeña, "
    "México caribeño, Costa del golfo de México",
    "América central",
    "Chileno: Chile, Cuyo",
]
FREE_TEXT = ["acento neutro", "catalán", "gallego", "mezcla de varios"]

# Natural-sounding espeak-ng variants (robotic, whisper and novelty voices left out).
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "Andy", "Annie", "Alicia", "Andrea", "David", "Diogo", "Gene", "Henrique", "Hugo", "Jacky",
    "Lee", "Linda", "Marcelo", "Mario", "Michael", "Miguel", "Pablo", "Paul", "Pedro", "Steph",
    "anika", "klatt", "klatt2", "klatt3", "norbert", "travis", "victor", "sandro", "grandma",
]

# Sentences written for this project, rich in c/z (θ~s) and ll (ʎ~ʝ), plus one with quotes.
SENTENCES = [
    "La cerveza de Zaragoza llega a la calle.",
    "El cocinero cierra la caja de cerezas.",
    "Cinco zapatos azules bajo la silla.",
    "La lluvia cae sobre el pollo asado.",
    "Necesito cenar cerca de la plaza.",
    "El caballo cruza la calle con calma.",
    "Hace frío en el valle cuando anochece.",
    "La cocina huele a cebolla y a ajo.",
    "Cecilia llama a su vecina por la mañana.",
    "El zorro se esconde entre las cebadas.",
    "Llevamos la silla amarilla al pasillo.",
    "Las ciruelas y las manzanas están maduras.",
    "Hizo un viaje corto a Valencia.",
    "La zona centro tiene muchos cines.",
    "Ella lleva un collar de perlas.",
    "El cielo se llenó de estrellas.",
    "Mi abuelo cultiva calabazas en el huerto.",
    "Dijo \"hasta luego\" y cerró la puerta.",
    "Recibí la noticia con sorpresa.",
    "El lazo azul adorna la cesta.",
    "Pasamos la tarde en la playa.",
    "La ciudad celebra sus fiestas en marzo.",
    "El pez nada despacio en la pecera.",
    "Allí se calla todo el mundo.",
    "Esa canción me hace feliz.",
    "Las llaves están encima de la mesa.",
    "Conocí a un actor muy sencillo.",
    "El gallo canta antes del amanecer.",
    "Quiero un zumo de naranja, por favor.",
    "La cerradura de la cocina está rota.",
    "Hay cien botellas en la bodega.",
    "El capitán llegó a la orilla.",
    "Necesitamos más paciencia y menos prisa.",
    "La cebra corre por la sabana.",
    "El martillo está en el cajón.",
    "Decidimos cruzar el puente a las doce.",
    "Cada lunes hacemos ejercicio.",
    "Los pollitos siguen a la gallina.",
    "La bicicleta azul es de mi hermano.",
    "Aceptó la oferta sin dudar.",
]
SHORT_WORDS = ["Sí.", "No.", "Hola."]
CLIPS_PER_SPEAKER = 5


@dataclass(frozen=True)
class Speaker:
    client_id: str
    voice: str  # es or es-419
    variant: str
    pitch: int
    speed: int
    gain_db: float
    lowpass_hz: int
    sample_rate: int
    accents: str
    age: str
    gender: str
    n_clips: int


def make_speakers(rng: random.Random, per_class: int, no_accent: int, free_text: int) -> list[Speaker]:
    """Speakers of both voices share one pool of variants so voice quality says nothing of accent."""
    speakers = []
    plan = []
    for voice, presets in (("es", SPAIN_PRESETS), ("es-419", AMERICA_PRESETS)):
        for i in range(per_class):
            accents = presets[i % len(presets)]
            if i % 9 == 4:  # a speaker who typed free text beside a preset: still usable
                accents = f"{accents},{rng.choice(FREE_TEXT)}"
            plan.append((voice, accents, CLIPS_PER_SPEAKER))
    for i in range(no_accent):
        plan.append((rng.choice(["es", "es-419"]), "", 2))
    for i in range(free_text):
        plan.append((rng.choice(["es", "es-419"]), rng.choice(FREE_TEXT), 2))
    # One speaker who ticked two accents of different classes: dropped as ambiguous.
    plan.append(("es", f"{AMERICA_PRESETS[0]},{SPAIN_PRESETS[1]}", 2))
    for n, (voice, accents, n_clips) in enumerate(plan):
        variant = rng.choice(VARIANTS)
        speakers.append(
            Speaker(
                client_id=hashlib.sha512(f"acento-sample-speaker-{n}".encode()).hexdigest(),
                voice=voice,
                variant=variant,
                pitch=rng.randint(25, 75),
                speed=rng.randint(135, 185),
                gain_db=round(rng.uniform(-9.0, -1.0), 1),
                lowpass_hz=rng.choice([5500, 6500, 7500, 9000, 11000]),
                sample_rate=32000 if rng.random() < 0.2 else 48000,
                accents=accents,
                age=rng.choice(["", "twenties", "thirties", "fourties", "fifties"]),
                gender=rng.choice(["", "male_masculine", "female_feminine"]),
                n_clips=n_clips,
            )
        )
    return speakers


def synthesize(text: str, spk: Speaker, out: Path, tmp: Path) -> None:
    pad = ["0.1", "0.1"] if text in SHORT_WORDS else ["0.35", "0.45"]
    wav = tmp / (out.stem + ".wav")
    subprocess.run(
        ["espeak-ng", "-v", f"{spk.voice}+{spk.variant}", "-p", str(spk.pitch), "-s", str(spk.speed),
         "-w", str(wav), text],
        check=True, capture_output=True,
    )
    # Leading/trailing silence like a browser recording; a per-speaker level and "microphone" band.
    subprocess.run(
        ["sox", "-R", str(wav), "-r", str(spk.sample_rate), "-c", "1", "-C", "32", str(out),
         "lowpass", str(spk.lowpass_hz), "gain", str(spk.gain_db), "pad", *pad, "dither"],
        check=True, capture_output=True,
    )
    wav.unlink()


def tsv(rows: list[list[str]], header: list[str]) -> bytes:
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def build(out_path: Path, seed: int, per_class: int) -> None:
    rng = random.Random(seed)
    speakers = make_speakers(rng, per_class, no_accent=10, free_text=4)
    jobs = []  # (speaker, sentence, clip name, which tsv)
    clip_no = 39_000_000
    for spk in speakers:
        for sentence in rng.sample(SENTENCES, spk.n_clips):
            clip_no += rng.randint(1, 40)
            jobs.append((spk, sentence, f"common_voice_{LOCALE}_{clip_no}.mp3", "validated"))
    # A few clips too short to carry an accent, and a few in other.tsv (not yet validated).
    for spk in rng.sample([s for s in speakers if s.accents and s.n_clips == CLIPS_PER_SPEAKER], 6):
        clip_no += rng.randint(1, 40)
        jobs.append((spk, rng.choice(SHORT_WORDS), f"common_voice_{LOCALE}_{clip_no}.mp3", "validated"))
    for spk in rng.sample([s for s in speakers if s.accents and s.n_clips == CLIPS_PER_SPEAKER], 8):
        clip_no += rng.randint(1, 40)
        jobs.append((spk, rng.choice(SENTENCES), f"common_voice_{LOCALE}_{clip_no}.mp3", "other"))

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        root = tmp / RELEASE / LOCALE
        (root / "clips").mkdir(parents=True)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda j: synthesize(j[1], j[0], root / "clips" / j[2], tmp), jobs))

        header = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender",
                  "accents", "variant", "locale", "segment"]
        rows: dict[str, list[list[str]]] = {"validated": [], "other": []}
        durations = []
        for spk, sentence, clip, which in jobs:
            up, down = (str(rng.randint(2, 4)), str(rng.choice([0] * 9 + [1]))) if which == "validated" \
                else ("1", str(rng.choice([0, 1, 2])))
            rows[which].append([spk.client_id, clip, sentence, up, down, spk.age, spk.gender,
                                spk.accents, "", LOCALE, ""])
            info = sf.info(str(root / "clips" / clip))
            durations.append([clip, str(round(info.frames / info.samplerate * 1000))])
        (root / "validated.tsv").write_bytes(tsv(rows["validated"], header))
        (root / "other.tsv").write_bytes(tsv(rows["other"], header))
        (root / "invalidated.tsv").write_bytes(tsv([], header))
        (root / "reported.tsv").write_bytes(
            tsv([], ["sentence_id", "sentence", "locale", "reason"]))
        (root / "clip_durations.tsv").write_bytes(tsv(durations, ["clip", "duration[ms]"]))
        write_deterministic_tar(tmp / RELEASE, out_path)
    n_clips = len(jobs)
    print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.2f} MB): {len(speakers)} speakers, "
          f"{n_clips} clips")


def write_deterministic_tar(folder: Path, out_path: Path) -> None:
    """Same inputs, same bytes: sorted members, fixed mtimes and owners, gzip header without a date."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted([folder, *folder.rglob("*")]):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(folder.parent)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 1_700_000_000, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                tar.addfile(info)
            else:
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_suffix(".tmp")
    with open(tmp_out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    tmp_out.replace(out_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="archive to write")
    parser.add_argument("--seed", type=int, default=2024, help="fixes speakers, sentences and labels")
    parser.add_argument("--speakers-per-class", type=int, default=50)
    args = parser.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found; install it with: apt-get install espeak-ng sox libsox-fmt-mp3")
    build(args.out, args.seed, args.speakers_per_class)


if __name__ == "__main__":
    main()
