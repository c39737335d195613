"""Build the bundled synthetic corpus: seven Spanish accents in the exact Common Voice 16.1 layout.

Why synthetic: Common Voice cannot be downloaded offline, yet `dvc repro` must work on a fresh
machine.  Real Spanish regional accents differ by many small, partly shared, variable traits, so the
accents here are made the same way, as a caricature: espeak-ng's phoneme string for each sentence
(`espeak-ng -v es -x`, which keeps /θ/ for c,z and /ʎ/ for ll, so every rule has its input) is
rewritten by regional rules from Spanish dialectology (seseo, ceceo, aspiration or loss of syllable-
final /s/, loss of /d/, /l/-/r/ neutralisation, yeísmo, sheísmo, /tʃ/ -> /ʃ/, velar final /n/, ...)
and the rewritten string is synthesised with `[[...]]`.  Each class is a set of rules; each speaker
draws, per rule, whether it has the trait at all and at what rate, and applies it per occurrence
with that probability, so no two speakers of a class sound alike and classes overlap.

Nuisance drawn per speaker independently of the accent: the base voice (espeak-ng's `es` or
`es-419` prosody, 50/50 in every class; `es-419` is loaded from a private copy of its voice file
without its `replace 00 T s` line and with the `es` phoneme table, identical to `es-419` otherwise,
so a /θ/ the rules keep is spoken whatever the base voice), voice variant, pitch, speed, level,
microphone band and sample rate.  So only the rewritten phonemes carry the accent.

Every rule is checked before building: the rewritten string must reach espeak-ng unchanged
(`-x` echoes it back) and give different audio than the original, so no rule is a silent no-op.
The rule table with its dialectology is printed by `--rules` (Markdown).

Also written, so every filter of the prepare and features stages has work: speakers with no accent,
with only free text, with free text beside a preset, with two accents of different classes;
down-voted clips, clips too short ("Sí.") and too long, clips in other.tsv and invalidated.tsv, a
clip missing from clip_durations.tsv, clips listed but missing, unreadable (garbage bytes, empty
file) and silent clips.  Same seed and same espeak-ng/sox/LAME, same bytes.

Requires Debian's espeak-ng and sox (with libsox-fmt-mp3), and the project's Python (soundfile):
    apt-get install espeak-ng sox libsox-fmt-mp3
    .venv/bin/python scripts/make_sample_corpus.py        # rewrites data/sample/cv-corpus-sample-es.tar.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

RELEASE = "cv-corpus-acento-sample-2.0"
LOCALE = "es"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "sample" / "cv-corpus-sample-es.tar.gz"

# Class name -> the real Common Voice accent preset its speakers chose (acento/corpus/records.py).
CLASSES = {
    "norte": "España: Norte peninsular (Asturias, Castilla y León, Cantabria, País Vasco, Navarra, Aragón, "
             "La Rioja, Guadalajara, Cuenca)",
    "sur": "España: Sur peninsular (Andalucia, Extremadura, Murcia)",
    "mexico": "México",
    "caribe": "Caribe: Cuba, Venezuela, Puerto Rico, República Dominicana, Panamá, Colombia caribeña, "
              "México caribeño, Costa del golfo de México",
    "andino": "Andino-Pacífico: Colombia, Perú, Ecuador, oeste de Bolivia y Venezuela andina",
    "rioplatense": "Rioplatense: Argentina, Uruguay, este de Bolivia, Paraguay",
    "chileno": "Chileno: Chile, Cuyo",
}
FREE_TEXT = ["acento neutro", "catalán", "gallego", "mezcla de varios", "andaluz", "porteño"]

# Natural-sounding espeak-ng variants (robotic, whisper and novelty voices left out).
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "Andy", "Annie", "Alicia", "Andrea", "David", "Diogo", "Gene", "Henrique", "Hugo", "Jacky",
    "Lee", "Linda", "Marcelo", "Mario", "Michael", "Miguel", "Pablo", "Paul", "Pedro", "Steph",
    "anika", "klatt", "klatt2", "klatt3", "norbert", "travis", "victor", "sandro", "grandma",
]

# Sentences written for this project, rich in what the rules act on: c/z, ll/y, ch, j/g, syllable-
# and word-final s, intervocalic and final d, l/r before a consonant, final r and n, rr; one has quotes.
SENTENCES = [
    "La cerveza de Zaragoza llega a la calle.",
    "El chico del pueblo llevó cinco cerezas rojas.",
    "Cecilia y su hija cocinan pollo con arroz.",
    "La gente joven baila en la plaza del centro.",
    "Ayer el muchacho rompió la silla de la cocina.",
    "Mi vecino cuida gallinas y cerdos en la granja.",
    "Las llaves del coche están guardadas en el cajón.",
    "El juez dijo que la ciudad necesita más calles.",
    "Hace mucho calor en julio y llueve poco.",
    "Los jóvenes cruzaron el río con cuidado.",
    "La chica pelirroja lleva una camisa azul.",
    "El cazador encontró huellas de jabalí junto al arroyo.",
    "Usted tiene razón, hoy cerramos a las doce.",
    "Mi abuela hizo churros con chocolate caliente.",
    "El perro del vecino ladra cada noche.",
    "Necesito cinco cebollas y un ajo.",
    "La lluvia ensució las ventanas del salón.",
    "Dijo \"hasta luego\" y cerró la puerta de la calle.",
    "Mañana iremos a la playa de Valencia.",
    "El ejército cruzó la sierra de noche.",
    "Mis hijos juegan en el parque hasta las doce.",
    "La mujer del médico cocina garbanzos con chorizo.",
    "Ellos llegaron cansados pero felices.",
    "Esa canción me recuerda a mi juventud.",
    "La cebra y la jirafa corren por la sabana.",
    "El cielo se llenó de estrellas brillantes.",
    "Quiero un vaso de jugo de naranja, por favor.",
    "Los pollitos siguen a la gallina.",
    "El martillo está en el cajón de arriba.",
    "Decidimos cruzar el puente a las doce.",
    "La juventud de hoy busca trabajo en la ciudad.",
    "El alcalde habló con los vecinos del barrio.",
    "El volcán despertó hace cien años.",
    "Comer ajo y cebolla es bueno para la salud.",
    "La calle mayor estaba llena de gente.",
    "¿Dónde pusiste las tijeras rojas?",
    "Recibí la noticia del juicio con sorpresa.",
    "Tu hijo ya es más alto que yo.",
    "Siempre desayuno café con leche y galletas.",
    "El ladrón rompió la ventana de la cocina.",
    "La iglesia vieja está junto a la plaza.",
    "Están pintando la fachada del edificio.",
    "Cerca de la estación hay un hotel barato.",
    "La profesora explicó la lección despacio.",
    "El gallo canta antes del amanecer.",
    "Hay cien botellas en la bodega.",
    "Ella lleva un collar de perlas.",
    "Voy a regalar a mi madre un reloj rojo.",
    "Cecilia llama a su vecina por la mañana.",
    "El capitán llegó a la orilla del río.",
    "La bicicleta azul es de mi hermano.",
    "Necesitamos más paciencia y menos prisa.",
    "Los zapatos azules están debajo de la cama.",
    "Ayer comimos pollo asado con arroz.",
    "Los chicos comieron pescado en la playa.",
    "La ciudad tiene calles muy estrechas.",
    "Llevamos las sillas amarillas al patio.",
    "El muchacho bebió un vaso de leche.",
    "Hay cinco manzanas verdes en la mesa.",
    "El soldado cerró la puerta del cuartel.",
    "La lluvia cae sobre el tejado de la iglesia.",
    "Mi padre trabaja en un taller de coches.",
    "Las chicas bailaron juntas hasta la madrugada.",
    "Se me olvidaron las llaves en el coche.",
    "El pescador vendió sus peces en la playa.",
    "La cocina huele a cebolla y a ajo.",
    "Los jóvenes juegan al fútbol en el parque.",
    "La noche está fresca y la luna brilla.",
    "Mi abuela hizo una torta de chocolate.",
    "El zorro se esconde entre las cebadas.",
    "Mi hermano llegó cansado y se echó en el sillón.",
    "Las olas rompen contra las rocas de la costa.",
    "El tren de Sevilla llegó con retraso.",
    "Los pescadores llegan de noche con la red rota.",
    "Hablamos de la salud y de la felicidad.",
    "Nadie sabe dónde escondió el joven la llave.",
    "La chaqueta amarilla cuelga junto a la puerta.",
]
SHORT_WORDS = ["Sí.", "No.", "Hola."]

# The benchmark corpus's own sentences (`--sentences benchmark`): none of the sample's, equally rich in what the
# rules act on, so a model chosen on one corpus is checked on sentences it never heard.
BENCHMARK_SENTENCES = [
    "El zapatero cerró su taller a las cinco.",
    "Mi tía Lucía cocina lentejas los jueves.",
    "Los caballos corren libres por la llanura.",
    "La plaza mayor se llena de turistas en verano.",
    "Ese hombre vende mazorcas de maíz en la esquina.",
    "Nos quedamos callados cuando llegó el director.",
    "El jinete cruzó el valle con su yegua.",
    "La cigüeña hizo su nido en la torre.",
    "Traje un ramo de rosas para la fiesta.",
    "El reloj de la estación marca las diez.",
    "Mi compadre juega al ajedrez con su nieto.",
    "La cocinera usa mucha sal y poco azúcar.",
    "El cachorro duerme junto a la chimenea.",
    "Los vecinos organizaron una cena en el patio.",
    "La ardilla guarda nueces para el invierno.",
    "El pescadero corta la merluza con cuidado.",
    "Compramos queso, jamón y pan de centeno.",
    "La señora Jiménez perdió sus gafas en el autobús.",
    "Mis primos llegaron tarde a la boda.",
    "El árbol del jardín da muchas cerezas.",
    "La orquesta tocó una canción muy alegre.",
    "Hay que lavar la ropa antes del domingo.",
    "El conductor frenó de golpe en la carretera.",
    "Ella siempre calza botas de cuero.",
    "Los chicos recogieron conchas en la orilla.",
    "El payaso hizo reír a todos los niños.",
    "Mi hermana estudia ciencias en la universidad.",
    "La lechuza caza ratones durante la noche.",
    "El carpintero arregló la mesa del comedor.",
    "Esta mañana llovió sobre los campos de trigo.",
    "Los cerdos comen bellotas en la dehesa.",
    "Guardé las joyas en una caja de madera.",
    "La niña dibujó un caballo con lápices de colores.",
    "El cartero trajo dos cartas para usted.",
    "Mi cuñado arregla relojes en su casa.",
    "Las gallinas ponen huevos cada día.",
    "El capitán del barco saludó a los pasajeros.",
    "Hicimos una excursión a la sierra el sábado.",
    "La vajilla nueva está en el armario.",
    "Los jugadores celebraron el gol con alegría.",
    "El tejado de la casa necesita reparación.",
    "Mi abuelo cultiva calabazas en su huerto.",
    "Las estrellas brillan sobre el desierto.",
    "La ciudad amaneció cubierta de niebla.",
    "El joven pidió un bocadillo de calamares.",
    "Juana cose un vestido de seda roja.",
    "La lavadora hace mucho ruido por la noche.",
    "Los pájaros cantan en el bosque al amanecer.",
    "Hoy cenamos sopa de fideos y ensalada.",
    "El guardia abrió la verja del castillo.",
    "Nuestro equipo ganó la copa del torneo.",
    "La cerradura de la puerta está rota.",
    "Mis amigos viajan a Galicia en diciembre.",
    "El cocinero echó ajo y perejil a la salsa.",
    "Ya llegan los músicos con sus guitarras.",
    "Ellos buscan trabajo en la capital.",
    "La hija del alcalde se casa en mayo.",
    "Las hojas secas cubren el camino del parque.",
    "El gigante del cuento vivía en una cueva.",
    "Pusieron una silla junto a la ventana del salón.",
]

# ---------------------------------------------------------------------------------------------
# espeak-ng's phoneme mnemonics for Spanish (`-x`): T θ, s s, x x, tS tʃ, l^ ʎ, J^ ʝ, n^ ɲ, r and ** ɾ,
# R2 r (trill), B D Q β ð ɣ, N ŋ, j w glides, I U diphthong offglides; ' and , mark stress before a
# vowel; a trailing ; is a palatalised variant.  The rules add S ʃ, Z ʒ, h h, C ç (all in the table).
MULTI = ("tS", "l^", "J^", "n^", "R2", "**", "dZ")
SINGLE = set("aeEiouOjwIUpbtdkgBDQfTsSzZxhCmnNlrRGJ")
VOWELS = set("aeEiouO")
GLIDES = set("jwIU")
VOICELESS = {"p", "t", "k", "f", "T", "s", "x", "tS", "S", "h", "C"}
STRESS = {"'", ","}
WB = "#"  # word boundary inside a clause


def tokenize(word: str) -> list[str]:
    tokens, i = [], 0
    while i < len(word):
        for m in MULTI:
            if word.startswith(m, i):
                tokens.append(m)
                i += len(m)
                break
        else:
            c = word[i]
            if c == ";" and tokens:
                tokens[-1] += ";"
            elif c in SINGLE or c in STRESS:
                tokens.append(c)
            else:
                raise ValueError(f"unknown espeak-ng phoneme {c!r} in {word!r}")
            i += 1
    return tokens


def base(tok: str | None) -> str | None:
    return tok.rstrip(";") if tok else tok


@dataclass(frozen=True)
class Ctx:
    tok: str             # the phoneme, without a palatalisation mark
    prev: str | None     # previous phoneme in the clause (None: pause)
    next: str | None     # next phoneme in the clause (None: pause)
    word_initial: bool
    word_final: bool
    stressed: bool       # a stress mark right before it (vowels)
    vowels_in_word: int


def is_vowel(t: str | None) -> bool:
    return t is not None and base(t) in VOWELS


def is_consonant(t: str | None) -> bool:
    return t is not None and base(t) not in VOWELS and base(t) not in GLIDES


def contexts(seq: list[str]) -> list[Ctx | None]:
    """The context of each phoneme of a clause (`seq`: tokens with WB between words)."""
    out: list[Ctx | None] = []
    word_vowels: list[int] = []
    count = 0
    for t in seq + [WB]:
        if t == WB:
            word_vowels.append(count)
            count = 0
        elif is_vowel(t):
            count += 1
    w = 0
    for i, t in enumerate(seq):
        if t == WB:
            w += 1
            out.append(None)
            continue
        if t in STRESS:
            out.append(None)
            continue
        j, crossed_prev = i - 1, False
        while j >= 0 and (seq[j] in STRESS or seq[j] == WB):
            crossed_prev |= seq[j] == WB
            j -= 1
        k, crossed_next = i + 1, False
        while k < len(seq) and (seq[k] in STRESS or seq[k] == WB):
            crossed_next |= seq[k] == WB
            k += 1
        out.append(Ctx(tok=base(t), prev=base(seq[j]) if j >= 0 else None,
                       next=base(seq[k]) if k < len(seq) else None,
                       word_initial=j < 0 or crossed_prev, word_final=k >= len(seq) or crossed_next,
                       stressed=i > 0 and seq[i - 1] in STRESS, vowels_in_word=word_vowels[w]))
    return out


def onset_next(c: Ctx) -> bool:
    """Followed by a vowel or glide: the consonant opens a syllable (across words too: resyllabified)."""
    return c.next is not None and (c.next in VOWELS or c.next in GLIDES)


def coda(c: Ctx) -> bool:
    """Closes its syllable: word-final, or before a consonant in the word."""
    return c.word_final or is_consonant(c.next)


@dataclass(frozen=True)
class Rule:
    name: str
    change: str        # what it does, in IPA
    where: str         # in which context
    dialectology: str  # what it stands for
    when: Callable[[Ctx], bool]
    to: tuple[str, ...]  # replacement tokens; () deletes
    test: str          # a phoneme string where the rule applies (checked to change the audio)


RULES = [  # applied in this order
    Rule("seseo", "θ → s", "everywhere", "seseo: c/z and s merged as /s/ (all of America, much of Andalusia, Canarias)",
         lambda c: c.tok == "T", ("s",), "TerB'eTa"),
    Rule("ceceo", "s → θ", "before a vowel", "ceceo: s and c/z merged as [θ]-like (coastal and southern Andalusia)",
         lambda c: c.tok == "s" and onset_next(c), ("T",), "k'asa"),
    Rule("yeismo", "ʎ → ʝ", "everywhere", "yeísmo: ll and y merged (almost everywhere; ʎ kept in the Andes, Paraguay, "
         "rural north of Spain)", lambda c: c.tok == "l^", ("J^",), "l^'eQa"),
    Rule("sheismo", "ʝ → ʃ", "everywhere", "sheísmo: ll/y as voiceless [ʃ] (Buenos Aires, younger speakers)",
         lambda c: c.tok == "J^", ("S",), "J^'o"),
    Rule("zheismo", "ʝ → ʒ", "everywhere", "žeísmo: ll/y as voiced [ʒ] (Río de la Plata, older speakers)",
         lambda c: c.tok == "J^", ("Z",), "J^'o"),
    Rule("ch_fricative", "tʃ → ʃ", "everywhere", "deaffricated ch, 'musho' (western Andalusia, Chile, Panamá, "
         "northern Mexico)", lambda c: c.tok == "tS", ("S",), "mutS'atSo"),
    Rule("x_palatal", "x → ç", "before e, i", "fronted jota before front vowels, 'muçer' (Chile)",
         lambda c: c.tok == "x" and c.next in ("e", "E", "i", "j"), ("C",), "mux'er"),
    Rule("x_aspirated", "x → h", "everywhere", "jota as glottal [h] (Caribbean, Andalusia, Canarias, Colombia, "
         "Central America)", lambda c: c.tok == "x", ("h",), "x'ota"),
    Rule("vowel_reduction", "V → ∅", "unstressed, between /s/ and a voiceless consonant",
         "weakened unstressed vowels next to /s/, 'pes(o)s', 'ps' (central Mexico, Andes)",
         lambda c: c.tok in VOWELS and not c.stressed and not c.word_initial and not c.word_final
         and c.vowels_in_word > 1 and ((c.prev == "s" and c.next in VOICELESS) or
                                       (c.prev in VOICELESS and c.next == "s")), (), "pesk'aDo"),
    Rule("s_drop_final", "s → ∅", "word-final", "loss of final /s/, 'la casa' for 'las casas' (Andalusia, "
         "Caribbean, Chile)", lambda c: c.tok == "s" and c.word_final, (), "l'as k'asas"),
    Rule("s_aspirated_C", "s → h", "before a consonant", "aspirated syllable-final /s/, 'pehcado' (southern "
         "Spain, Caribbean, Chile, Río de la Plata, coastal Andes)", lambda c: c.tok == "s" and is_consonant(c.next),
         ("h",), "pesk'aDo"),
    Rule("s_aspirated_end", "s → h", "word-final, before a vowel or pause", "aspirated final /s/ (Andalusia, "
         "Caribbean, Chile)", lambda c: c.tok == "s" and c.word_final and not is_consonant(c.next), ("h",),
         "l'as 'olas"),
    Rule("d_drop_vowel", "ð → ∅", "between vowels", "loss of intervocalic /d/, 'cansao' (Andalusia, Caribbean, "
         "Chile; less elsewhere)", lambda c: c.tok == "D" and is_vowel(c.prev) and is_vowel(c.next)
         and not c.word_initial and not c.word_final, (), "kans'aDo"),
    Rule("d_final_theta", "d → θ", "word-final", "final /d/ as [θ], 'Madriz', 'verdaz' (northern and central Spain)",
         lambda c: c.tok in ("d", "D") and c.word_final, ("T",), "maD**'id"),
    Rule("d_final_drop", "d → ∅", "word-final", "loss of final /d/, 'usté', 'verdá' (most of the Spanish-speaking "
         "world)", lambda c: c.tok in ("d", "D") and c.word_final, (), "maD**'id"),
    Rule("r_final_assibilated", "ɾ → ʒ", "word-final before a pause", "assibilated final r (central Mexico, Andes, "
         "Costa Rica)", lambda c: c.tok in ("r", "**") and c.word_final and c.next is None, ("Z",), "kom'er"),
    Rule("r_final_drop", "ɾ → ∅", "word-final", "loss of final r, 'comé' (Andalusia, Caribbean)",
         lambda c: c.tok in ("r", "**") and c.word_final, (), "kom'er"),
    Rule("r_to_l", "ɾ → l", "syllable-final", "lambdacism, 'puelta' for 'puerta' (Puerto Rico, Caribbean)",
         lambda c: c.tok in ("r", "**") and coda(c), ("l",), "pw'erta"),
    Rule("l_to_r", "l → ɾ", "syllable-final", "rhotacism, 'arcarde' for 'alcalde' (Andalusia)",
         lambda c: c.tok == "l" and coda(c), ("r",), "alk'alDe"),
    Rule("rr_assibilated", "r → ʒ", "trill (rr, initial r)", "assibilated rr (Andes, Guatemala, Costa Rica, "
         "Paraguay)", lambda c: c.tok == "R2", ("Z",), "p'eR2o"),
    Rule("n_velar", "n → ŋ", "word-final, before a vowel or pause", "velar final /n/, 'pan' as [paŋ] (Caribbean, "
         "Andalusia, coastal Peru and Colombia, Central America)",
         lambda c: c.tok == "n" and c.word_final and not is_consonant(c.next), ("N",), "p'an"),
]
RULE_BY_NAME = {r.name: r for r in RULES}


@dataclass(frozen=True)
class Use:
    """A rule in a class: `share` of the class's speakers have it, each at a rate uniform in [lo, hi].
    Uses with the same `group` are exclusive: a speaker gets at most one of them."""
    rule: str
    lo: float
    hi: float
    share: float = 1.0
    group: str = ""


ACCENTS: dict[str, list[Use]] = {
    "norte": [Use("yeismo", 0.1, 0.6), Use("d_drop_vowel", 0.0, 0.3),
              Use("d_final_theta", 0.5, 1.0, share=0.8)],
    "sur": [Use("seseo", 0.8, 1.0, share=0.4, group="sibilant"), Use("ceceo", 0.7, 1.0, share=0.35, group="sibilant"),
            Use("yeismo", 0.9, 1.0), Use("ch_fricative", 0.3, 0.8, share=0.5), Use("x_aspirated", 0.5, 1.0),
            Use("s_drop_final", 0.3, 0.8), Use("s_aspirated_C", 0.7, 1.0), Use("s_aspirated_end", 0.5, 1.0),
            Use("d_drop_vowel", 0.4, 0.9), Use("d_final_drop", 0.7, 1.0), Use("r_final_drop", 0.4, 0.9),
            Use("l_to_r", 0.2, 0.6, share=0.5), Use("n_velar", 0.2, 0.6, share=0.3)],
    "mexico": [Use("seseo", 1.0, 1.0), Use("yeismo", 0.95, 1.0), Use("vowel_reduction", 0.3, 0.7, share=0.9),
               Use("d_drop_vowel", 0.0, 0.15), Use("d_final_drop", 0.2, 0.6),
               Use("r_final_assibilated", 0.3, 0.8, share=0.6), Use("ch_fricative", 0.2, 0.5, share=0.15)],
    "caribe": [Use("seseo", 1.0, 1.0), Use("yeismo", 0.95, 1.0), Use("x_aspirated", 0.7, 1.0),
               Use("s_drop_final", 0.4, 0.8), Use("s_aspirated_C", 0.7, 1.0), Use("s_aspirated_end", 0.5, 1.0),
               Use("d_drop_vowel", 0.5, 0.9), Use("d_final_drop", 0.7, 1.0), Use("r_final_drop", 0.3, 0.7),
               Use("r_to_l", 0.4, 0.9, share=0.7), Use("n_velar", 0.7, 1.0)],
    "andino": [Use("seseo", 1.0, 1.0), Use("yeismo", 0.0, 0.3), Use("vowel_reduction", 0.2, 0.6, share=0.6),
               Use("d_drop_vowel", 0.0, 0.2), Use("d_final_drop", 0.2, 0.6),
               Use("r_final_assibilated", 0.3, 0.8, share=0.5), Use("rr_assibilated", 0.5, 1.0, share=0.8),
               Use("x_aspirated", 0.3, 0.8, share=0.3), Use("n_velar", 0.3, 0.8, share=0.4)],
    "rioplatense": [Use("seseo", 1.0, 1.0), Use("yeismo", 1.0, 1.0),
                    Use("sheismo", 0.8, 1.0, share=0.6, group="rehilamiento"),
                    Use("zheismo", 0.8, 1.0, share=0.4, group="rehilamiento"),
                    Use("s_aspirated_C", 0.5, 0.9), Use("s_aspirated_end", 0.0, 0.3),
                    Use("d_drop_vowel", 0.1, 0.4), Use("d_final_drop", 0.5, 0.9), Use("r_final_drop", 0.1, 0.4)],
    "chileno": [Use("seseo", 1.0, 1.0), Use("yeismo", 0.95, 1.0), Use("ch_fricative", 0.4, 0.9, share=0.7),
                Use("x_palatal", 0.8, 1.0), Use("s_drop_final", 0.3, 0.7), Use("s_aspirated_C", 0.6, 1.0),
                Use("s_aspirated_end", 0.4, 0.9), Use("d_drop_vowel", 0.6, 1.0), Use("d_final_drop", 0.7, 1.0)],
}
assert set(ACCENTS) == set(CLASSES) and all(u.rule in RULE_BY_NAME for uses in ACCENTS.values() for u in uses)


def draw_rates(rng: random.Random, cls: str) -> dict[str, float]:
    rates: dict[str, float] = {}
    group_draw: dict[str, float] = {}
    group_used: dict[str, float] = {}
    for use in ACCENTS[cls]:
        if use.group:
            u = group_draw.setdefault(use.group, rng.random())
            start = group_used.get(use.group, 0.0)
            group_used[use.group] = start + use.share
            has = start <= u < start + use.share
        else:
            has = rng.random() < use.share
        rate = round(rng.uniform(use.lo, use.hi), 3)
        if has and rate > 0:
            rates[use.rule] = rate
    return rates


def rewrite(clauses: list[list[list[str]]], rates: dict[str, float], rng: random.Random,
            counts: dict[str, list[int]] | None = None) -> list[list[list[str]]]:
    """Applies the rules in order; each occurrence with the speaker's rate for that rule.

    `counts`, when given, gets rule name -> [times applied, occurrences where it could apply] for the rules
    the speaker has: what a perfect phone recogniser that knows the sentence would see (the oracle).
    Counting draws nothing from `rng`, so the corpus is the same with or without it."""
    out = []
    for clause in clauses:
        seq: list[str] = []
        for w, word in enumerate(clause):
            seq += ([WB] if w else []) + list(word)
        for rule in RULES:
            p = rates.get(rule.name, 0.0)
            if p <= 0:
                continue
            new: list[str] = []
            tally = counts.setdefault(rule.name, [0, 0]) if counts is not None else [0, 0]
            for t, c in zip(seq, contexts(seq)):
                if c is not None and rule.when(c):
                    tally[1] += 1
                    if p >= 1.0 or rng.random() < p:
                        tally[0] += 1
                        new += list(rule.to)
                        continue
                new.append(t)
            seq = new
        words, cur = [], []
        for t in seq:
            if t == WB:
                words.append(cur)
                cur = []
            else:
                cur.append(t)
        words.append(cur)
        out.append([w for w in words if any(t not in STRESS for t in w)])
    return out


# ---------------------------------------------------------------------------------------------
# espeak-ng

class Espeak:
    """espeak-ng with a private data folder: the system's data, plus an `es-419` voice file that keeps
    /θ/ (the system's replaces it by /s/) so either base voice speaks whatever the rules leave."""

    def __init__(self, tmp: Path):
        version = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
        match = re.search(r"Data at:\s*(\S+)", version)
        system = Path(match.group(1)) if match else Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data")
        self.version = version.split("Data at")[0].strip()
        data = tmp / "espeak-ng-data"
        (data / "lang").mkdir(parents=True)
        for entry in sorted(system.iterdir()):
            if entry.name != "lang":
                (data / entry.name).symlink_to(entry)
        (data / "lang" / "es").write_text("name Spanish (Spain)\nlanguage es\ndictrules 1\ntunes s6 c6 q6 e6\n")
        (data / "lang" / "es-419").write_text(
            "name Spanish (Latin America), es phoneme table\nlanguage es-419\nphonemes es\ndictrules 2\n"
            "intonation 2\nstressLength 170 200  230 180  0 0  250 280\n")
        self.path = str(tmp)

    def run(self, *args: str) -> bytes:
        return subprocess.run(["espeak-ng", f"--path={self.path}", *args], check=True, capture_output=True).stdout

    def phonemes(self, text: str) -> list[list[str]]:
        """Words of one clause as token lists (`-v es -x`: θ and ʎ kept)."""
        out = self.run("-v", "es", "-x", "-q", text).decode("utf-8")
        return [tokenize(w) for w in out.split()]


def split_clauses(sentence: str) -> tuple[list[str], list[str]]:
    """The sentence's clauses (quotes and opening marks dropped) and the punctuation after each."""
    text = sentence.replace('"', "").replace("¿", "").replace("¡", "")
    parts = re.split(r"([,;:.?!])", text)
    clauses, puncts = [], []
    for i in range(0, len(parts) - 1, 2):
        if parts[i].strip():
            clauses.append(parts[i].strip())
            puncts.append(parts[i + 1])
    if len(parts) % 2 and parts[-1].strip():
        clauses.append(parts[-1].strip())
        puncts.append(".")
    return clauses, puncts


def to_espeak_input(clauses: list[list[list[str]]], puncts: list[str]) -> str:
    return " ".join(f"[[{' '.join(''.join(w) for w in c)}]]{p}" for c, p in zip(clauses, puncts))


def check_rules(espeak: Espeak) -> list[str]:
    """Every rule must change the audio and reach espeak-ng unchanged; returns the verified names."""
    rng = random.Random(0)
    verified = []
    for rule in RULES:
        clause = [[tokenize(w) for w in rule.test.split()]]
        after = rewrite(clause, {rule.name: 1.0}, rng)
        before_s, after_s = to_espeak_input(clause, ["."]), to_espeak_input(after, ["."])
        if before_s == after_s:
            raise SystemExit(f"rule {rule.name}: does not apply to its test string {rule.test!r}")
        strip = lambda s: re.sub(r"[\s';,\[\].]", "", s)  # noqa: E731
        echoed = espeak.run("-v", "es", "-x", "-q", after_s).decode()
        if strip(echoed) != strip(after_s):
            raise SystemExit(f"rule {rule.name}: espeak-ng read {after_s!r} as {echoed.strip()!r}")
        for voice in ("es", "es-419"):
            if espeak.run("-v", voice, "--stdout", before_s) == espeak.run("-v", voice, "--stdout", after_s):
                raise SystemExit(f"rule {rule.name}: {after_s} sounds the same as {before_s} with {voice}")
        verified.append(f"{rule.name}: {rule.test} -> {after_s[2:-3]}")
    return verified


# ---------------------------------------------------------------------------------------------
# speakers and clips

@dataclass(frozen=True)
class Speaker:
    client_id: str
    accent_class: str      # whose rules they speak with (also for speakers whose label is unusable)
    rates: tuple[tuple[str, float], ...]
    voice: str             # base voice: es or es-419 (prosody only), independent of the accent
    variant: str
    pitch: int
    speed: int
    gain_db: float
    highpass_hz: int
    lowpass_hz: int
    sample_rate: int
    accents: str           # the `accents` field as written to the TSVs
    age: str
    gender: str
    n_clips: int
    full_rate: bool = False  # every rule the speaker has applies at every occurrence (rate 1)
    labelled: bool = False   # the accents field names exactly one class (what prepare keeps)


@dataclass(frozen=True)
class Design:
    """What tells one corpus from another beyond the seed: its sentences, the share of speakers whose rules
    apply at full rate (the other regime: per-speaker random rates, as in the sample) and the salt of its
    speakers' client_ids (so no two corpora share a speaker id)."""
    release: str = RELEASE
    sentences: tuple[str, ...] = tuple(SENTENCES)
    full_rate_share: float = 0.0
    speaker_salt: str = "acento-sample-2"


SAMPLE = Design()
BENCHMARK = Design(release="cv-corpus-acento-benchmark-1.0", sentences=tuple(BENCHMARK_SENTENCES),
                   full_rate_share=0.5, speaker_salt="acento-benchmark-1")


def make_speakers(rng: random.Random, per_class: int, clips: int, design: Design = SAMPLE) -> list[Speaker]:
    names = list(CLASSES)
    plan = []  # (class whose rules they speak, accents field, clips, labelled)
    for cls in names:
        for i in range(per_class):
            accents = CLASSES[cls]
            if i % 9 == 4:  # free text beside a preset: still usable
                accents = f"{accents},{rng.choice(FREE_TEXT)}"
            plan.append((cls, accents, clips, True))
    for _ in range(10):  # no accent given
        plan.append((rng.choice(names), "", 2, False))
    for _ in range(4):  # free text only
        plan.append((rng.choice(names), rng.choice(FREE_TEXT), 2, False))
    for _ in range(2):  # two accents of different classes: ambiguous
        a, b = rng.sample(names, 2)
        plan.append((a, f"{CLASSES[a]},{CLASSES[b]}", 2, False))
    return [draw_speaker(rng, f"{design.speaker_salt}-speaker-{n}", cls, accents, n_clips, labelled, design)
            for n, (cls, accents, n_clips, labelled) in enumerate(plan)]


def draw_speaker(rng: random.Random, salt: str, cls: str, accents: str, n_clips: int, labelled: bool,
                 design: Design) -> Speaker:
    """One speaker of class `cls`'s rules, its voice and microphone drawn from `rng`; its client_id from `salt`."""
    rates = draw_rates(rng, cls)
    # Drawn only where the design has the full-rate regime, so the sample's random stream is unchanged.
    full_rate = design.full_rate_share > 0 and rng.random() < design.full_rate_share
    if full_rate:
        rates = {rule: 1.0 for rule in rates}
    rate = rng.random()
    return Speaker(
        client_id=hashlib.sha512(salt.encode()).hexdigest(),
        accent_class=cls, rates=tuple(sorted(rates.items())),
        voice=rng.choice(["es", "es-419"]), variant=rng.choice(VARIANTS),
        pitch=rng.randint(20, 80), speed=rng.randint(130, 185),
        gain_db=round(rng.uniform(-10.0, -1.0), 1),
        highpass_hz=rng.choice([50, 100, 150, 250]), lowpass_hz=rng.choice([4500, 5500, 6500, 7500]),
        sample_rate=16000 if rate < 0.8 else 48000 if rate < 0.92 else 32000,
        accents=accents, age=rng.choice(["", "teens", "twenties", "thirties", "fourties", "fifties", "sixties"]),
        gender=rng.choice(["", "male_masculine", "female_feminine"]), n_clips=n_clips, full_rate=full_rate,
        labelled=labelled)


def unlabelled_speakers(rng: random.Random, per_class: int, clips: int, design: Design) -> list[Speaker]:
    """`per_class` speakers speaking each class's rules who gave no accent (an empty `accents` field), `clips`
    validated clips each: the unlabelled pool a real release has (most of its speakers give no accent)."""
    return [draw_speaker(rng, f"{design.speaker_salt}-unlabelled-{n}", cls, "", clips, False, design)
            for n, cls in enumerate(c for c in CLASSES for _ in range(per_class))]


@dataclass(frozen=True)
class Job:
    speaker: Speaker
    sentence: str
    clip: str
    tsv: str            # validated | other | invalidated
    kind: str = "speech"  # speech | long | undated (no duration listed) | silent | garbage | empty | missing
    espeak_input: str = ""
    oracle: tuple[tuple[str, int, int], ...] = ()  # (rule, times applied, occurrences) for the speaker's rules


def synthesize(espeak: Espeak, job: Job, clips: Path, tmp: Path) -> None:
    spk, out = job.speaker, clips / job.clip
    if job.kind == "missing":
        return
    if job.kind in ("garbage", "empty"):
        # Not an MP3 at all, though named so: libsndfile cannot decode it.
        data = b"" if job.kind == "empty" else hashlib.shake_256(job.clip.encode()).digest(7000)
        out.write_bytes(data)
        return
    if job.kind == "silent":  # a muted microphone: digital silence, no dither
        subprocess.run(["sox", "-n", "-r", str(spk.sample_rate), "-c", "1", "-C", "24", str(out),
                        "trim", "0", "3.2"], check=True, capture_output=True)
        return
    wav = tmp / (out.stem + ".wav")
    espeak.run("-v", f"{spk.voice}+{spk.variant}", "-p", str(spk.pitch), "-s", str(spk.speed), "-w", str(wav),
               job.espeak_input)
    short = job.sentence in SHORT_WORDS
    # Leading/trailing silence like a browser recording (a long one: left running); a per-speaker level and
    # "microphone" band; 16 kHz at 24 kbit/s (LAME keeps ~6 kHz), 32/48 kHz at 32 kbit/s.
    pad = ["0.1", "0.1"] if short else ["0.4", "12"] if job.kind == "long" else ["0.25", "0.3"]
    kbps = "24" if spk.sample_rate == 16000 else "32"
    subprocess.run(["sox", "-R", str(wav), "-r", str(spk.sample_rate), "-c", "1", "-C", kbps, str(out),
                    "highpass", str(spk.highpass_hz), "lowpass", str(spk.lowpass_hz), "gain", str(spk.gain_db),
                    "pad", *pad, "dither"], check=True, capture_output=True)
    wav.unlink()


def tsv(rows: list[list[str]], header: list[str]) -> bytes:
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


HEADER = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "variant",
          "locale", "segment"]


def plan_jobs(rng: random.Random, speakers: list[Speaker], phon: dict[str, tuple],
              sentences: tuple[str, ...] = tuple(SENTENCES)) -> list[Job]:
    clip_no = 39_000_000

    def name() -> str:
        nonlocal clip_no
        clip_no += rng.randint(1, 40)
        return f"common_voice_{LOCALE}_{clip_no}.mp3"

    jobs = []
    for spk in speakers:
        for sentence in rng.sample(sentences, spk.n_clips):
            jobs.append(Job(spk, sentence, name(), "validated"))
    labelled = [s for s in speakers if s.accents in CLASSES.values()]
    for spk in rng.sample(labelled, 6):  # too short to carry an accent
        jobs.append(Job(spk, rng.choice(SHORT_WORDS), name(), "validated"))
    for spk in rng.sample(labelled, 2):  # longer than data.max_seconds: a recording left running
        jobs.append(Job(spk, rng.choice(sentences), name(), "validated", "long"))
    for spk in rng.sample(labelled, 10):  # not yet validated
        jobs.append(Job(spk, rng.choice(sentences), name(), "other"))
    for spk in rng.sample(labelled, 4):  # voted down
        jobs.append(Job(spk, rng.choice(sentences), name(), "invalidated"))
    for kind, n in (("missing", 3), ("garbage", 2), ("empty", 1), ("silent", 1), ("undated", 1)):
        for spk in rng.sample(labelled, n):
            jobs.append(Job(spk, rng.choice(sentences), name(), "validated", kind))
    return with_accents(rng, jobs, phon)


def unlabelled_jobs(rng: random.Random, speakers: list[Speaker], phon: dict[str, tuple],
                    sentences: tuple[str, ...]) -> list[Job]:
    """The validated clips of the unlabelled speakers, named after the labelled ones' (from 49,000,000)."""
    jobs, clip_no = [], 49_000_000
    for spk in speakers:
        for sentence in rng.sample(sentences, spk.n_clips):
            clip_no += rng.randint(1, 40)
            jobs.append(Job(spk, sentence, f"common_voice_{LOCALE}_{clip_no}.mp3", "validated"))
    return with_accents(rng, jobs, phon)


def with_accents(rng: random.Random, jobs: list[Job], phon: dict[str, tuple]) -> list[Job]:
    """The jobs with each speaker's accent applied to its sentence (what espeak-ng is given)."""
    # The accent: rules drawn here, in job order, from the one seeded generator (not in the threads).
    out = []
    for job in jobs:
        clauses, puncts = phon[job.sentence]
        counts: dict[str, list[int]] = {}
        said = rewrite(clauses, dict(job.speaker.rates), rng, counts)
        out.append(Job(job.speaker, job.sentence, job.clip, job.tsv, job.kind, to_espeak_input(said, puncts),
                       tuple((rule, *counts[rule]) for rule in sorted(counts))))
    return out


def build(out_path: Path, seed: int, per_class: int, clips: int, workers: int, design: Design = SAMPLE,
          oracle_path: Path | None = None, unlabelled_per_class: int = 0) -> None:
    start = time.monotonic()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        espeak = Espeak(tmp / "espeak")
        verified = check_rules(espeak)
        print(f"{espeak.version}: {len(verified)} rules change the audio")
        phon = {}
        for sentence in list(design.sentences) + SHORT_WORDS:
            texts, puncts = split_clauses(sentence)
            phon[sentence] = ([espeak.phonemes(t) for t in texts], puncts)
        speakers = make_speakers(rng, per_class, clips, design)
        jobs = plan_jobs(rng, speakers, phon, design.sentences)
        if unlabelled_per_class:
            # A generator of their own, so the labelled corpus is the same with or without them.
            pool_rng = random.Random(f"{seed}-unlabelled")
            pool = unlabelled_speakers(pool_rng, unlabelled_per_class, clips, design)
            speakers += pool
            jobs += unlabelled_jobs(pool_rng, pool, phon, design.sentences)

        root = tmp / design.release / LOCALE
        (root / "clips").mkdir(parents=True)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda j: synthesize(espeak, j, root / "clips", tmp), jobs))

        rows: dict[str, list[list[str]]] = {"validated": [], "other": [], "invalidated": []}
        durations, seconds = [], 0.0
        for job in jobs:
            spk = job.speaker
            if job.tsv == "validated":
                up, down = str(rng.randint(2, 4)), str(1 if rng.random() < 1 / 15 else 0)
            elif job.tsv == "other":
                up, down = str(rng.randint(0, 1)), str(rng.randint(0, 1))
            else:
                up, down = str(rng.randint(0, 1)), str(rng.randint(2, 3))
            rows[job.tsv].append([spk.client_id, job.clip, job.sentence, up, down, spk.age, spk.gender,
                                  spk.accents, "", LOCALE, ""])
            if job.kind == "undated":  # left out of clip_durations.tsv
                continue
            if job.kind in ("missing", "garbage", "empty"):
                ms = 2500 + int(hashlib.sha256(job.clip.encode()).hexdigest(), 16) % 2500
            else:
                info = sf.info(str(root / "clips" / job.clip))
                ms = round(info.frames / info.samplerate * 1000)
                seconds += ms / 1000
            durations.append([job.clip, str(ms)])
        for which in rows:
            (root / f"{which}.tsv").write_bytes(tsv(rows[which], HEADER))
        (root / "reported.tsv").write_bytes(tsv([
            [hashlib.sha256(design.sentences[7].encode()).hexdigest(), design.sentences[7], LOCALE,
             "grammar-or-spelling"],
            [hashlib.sha256(design.sentences[30].encode()).hexdigest(), design.sentences[30], LOCALE,
             "difficult-pronunciation"],
        ], ["sentence_id", "sentence", "locale", "reason"]))
        (root / "clip_durations.tsv").write_bytes(tsv(durations, ["clip", "duration[ms]"]))
        write_deterministic_tar(tmp / design.release, out_path)
        if oracle_path is not None:
            write_oracle(oracle_path, jobs)
    print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.2f} MB) in {time.monotonic() - start:.0f} s: "
          f"{len(speakers)} speakers ({per_class} in each of {len(CLASSES)} classes, "
          f"{len(speakers) - (per_class + unlabelled_per_class) * len(CLASSES)} unusable, "
          f"{unlabelled_per_class * len(CLASSES)} unlabelled), {len(jobs)} clips, {seconds / 60:.1f} min of audio")


ORACLE_HEADER = ["clip", "client_id", "accent_class", "full_rate", "rules"]


def write_oracle(path: Path, jobs: list[Job]) -> None:
    """What a perfect phone recogniser that knows each sentence would see, one row per labelled speaker's
    validated speech clip (the clips prepare keeps, less its duration and vote filters):
    the speaker's class, regime and, per rule the speaker has, `rule:applied/occurrences` (`;`-joined).
    scripts/oracle_ceiling.py turns it into the corpus's ceiling."""
    rows = [[job.clip, job.speaker.client_id, job.speaker.accent_class, str(int(job.speaker.full_rate)),
             ";".join(f"{rule}:{applied}/{total}" for rule, applied, total in job.oracle)]
            for job in jobs if job.tsv == "validated" and job.kind == "speech" and job.speaker.labelled
            and job.sentence not in SHORT_WORDS]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = path.with_suffix(".tmp")
    tmp_out.write_bytes(tsv(rows, ORACLE_HEADER))
    tmp_out.replace(path)


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


def rule_table() -> str:
    """The per-class rule table in markdown (for the README)."""
    lines = ["| rule | change | where | stands for |", "|---|---|---|---|"]
    lines += [f"| `{r.name}` | {r.change} | {r.where} | {r.dialectology} |" for r in RULES]
    lines += ["", "| class | Common Voice preset | rules: share of speakers with it, rate per occurrence |",
              "|---|---|---|"]
    for cls, uses in ACCENTS.items():
        parts = []
        for u in uses:
            rate = f"{u.lo:g}" if u.lo == u.hi else f"{u.lo:g}–{u.hi:g}"
            share = "" if u.share == 1 else f"{u.share:.0%} of speakers, "
            parts.append(f"`{u.rule}` {share}{rate}")
        lines.append(f"| `{cls}` | {CLASSES[cls]} | {'; '.join(parts)} |")
    return "\n".join(lines)


# Per design: (archive, seed, labelled speakers per class). The benchmark corpus has 3x the sample's speakers.
DEFAULTS = {
    "sample": (DEFAULT_OUT, 2024, 28),
    "benchmark": (DEFAULT_OUT.parents[1] / "benchmark" / "cv-corpus-benchmark-es.tar.gz", 7031, 84),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--design", choices=sorted(DEFAULTS), default="sample",
                        help="sample: the bundled corpus; benchmark: the corpus for choosing defaults (its own "
                             "sentences and seed, 3x the speakers, half of them with every rule at full rate; "
                             "`make benchmark-corpus`) (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="archive to write (default: the design's: "
                        + ", ".join(f"{k}: {v[0].relative_to(DEFAULT_OUT.parents[2])}" for k, v in DEFAULTS.items())
                        + ")")
    parser.add_argument("--seed", type=int, default=None,
                        help="fixes speakers, sentences, accent rules and labels (default: the design's: "
                        + ", ".join(f"{k} {v[1]}" for k, v in DEFAULTS.items()) + ")")
    parser.add_argument("--speakers-per-class", type=int, default=None,
                        help="labelled speakers per class (default: the design's: "
                        + ", ".join(f"{k} {v[2]}" for k, v in DEFAULTS.items()) + ")")
    parser.add_argument("--clips-per-speaker", type=int, default=5,
                        help="validated clips of each labelled speaker (default: %(default)s)")
    parser.add_argument("--unlabelled-per-class", type=int, default=0,
                        help="also this many speakers per class who gave no accent (empty `accents`), "
                             "--clips-per-speaker validated clips each: an unlabelled pool (the labelled "
                             "corpus stays the same) (default: %(default)s)")
    parser.add_argument("--oracle", type=Path, default=None,
                        help="also write what a perfect phone recogniser would see of each clip (TSV) here; "
                             "scripts/oracle_ceiling.py turns it into the corpus's ceiling")
    parser.add_argument("--workers", type=int, default=2,
                        help="parallel synthesis processes; the result does not depend on it (default: %(default)s)")
    parser.add_argument("--rules", action="store_true", help="print the rule table (markdown) and exit")
    parser.add_argument("--check-rules", action="store_true",
                        help="check that every rule changes the audio, print the checks and exit")
    args = parser.parse_args(argv)
    if args.rules:
        print(rule_table())
        return
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found; install it with: apt-get install espeak-ng sox libsox-fmt-mp3")
    if args.check_rules:
        with tempfile.TemporaryDirectory() as tmpdir:
            print("\n".join(check_rules(Espeak(Path(tmpdir)))))
        return
    design = {"sample": SAMPLE, "benchmark": BENCHMARK}[args.design]
    out, seed, per_class = DEFAULTS[args.design]
    out, seed = args.out or out, args.seed if args.seed is not None else seed
    per_class = args.speakers_per_class if args.speakers_per_class is not None else per_class
    if per_class < 3 or args.clips_per_speaker < 1 or args.clips_per_speaker > len(design.sentences):
        sys.exit("error: need --speakers-per-class >= 3 and 1 <= --clips-per-speaker <= "
                 f"{len(design.sentences)}")
    if args.unlabelled_per_class < 0:
        sys.exit("error: need --unlabelled-per-class >= 0")
    build(out, seed, per_class, args.clips_per_speaker, max(1, args.workers), design, args.oracle,
          args.unlabelled_per_class)


if __name__ == "__main__":
    main()
