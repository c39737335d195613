import pytest

from acento.corpus.records import read_durations, read_tsv, split_accents
from acento.errors import StageError
from tests.helpers import (
    CENTRO,
    HEADER_16,
    HEADER_17,
    MEXICO,
    NORTE,
    SUR,
    speaker_id,
    write_tsv,
)


def test_pipe_separator_v21():
    assert split_accents(f"{MEXICO}|{SUR}") == [MEXICO, SUR]


def test_comma_separator_keeps_presets_with_commas_whole():
    assert split_accents(f"{SUR},catalán") == [SUR, "catalán"]
    assert split_accents(f"{NORTE},{CENTRO}") == [NORTE, CENTRO]
    assert split_accents(f"acento neutro,{NORTE}") == ["acento neutro", NORTE]


def test_comma_separator_splits_free_text_only_at_commas():
    assert split_accents("catalán, gallego") == ["catalán", "gallego"]
    assert split_accents("") == []
    assert split_accents("  ") == []


def test_a_preset_prefix_inside_free_text_is_not_taken_as_the_preset():
    assert split_accents("Méxicoo") == ["Méxicoo"]


def test_custom_accent_names_with_commas_are_matched_when_known():
    assert split_accents("Voseo, sur,catalán", known=["Voseo, sur"]) == ["Voseo, sur", "catalán"]


@pytest.mark.parametrize("header", [HEADER_16, HEADER_17])
def test_reads_16x_and_17x_columns_and_quotes_in_sentences(tmp_path, header):
    path = tmp_path / "validated.tsv"
    rows = [{"client_id": speaker_id(0), "path": "a.mp3", "sentence": 'Dijo "hola" y "adiós', "accents": MEXICO},
            {"client_id": speaker_id(1), "path": "b.mp3", "sentence": "Sin acento.", "accents": ""}]
    write_tsv(path, header, rows)
    frame, malformed = read_tsv(path)
    assert malformed == 0
    assert list(frame["sentence"]) == ['Dijo "hola" y "adiós', "Sin acento."]
    assert list(frame["accents"]) == [MEXICO, ""]


def test_old_accent_column_name_is_renamed(tmp_path):
    path = tmp_path / "validated.tsv"
    write_tsv(path, ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"],
              [{"client_id": "x", "path": "a.mp3", "accent": "México"}])
    frame, _ = read_tsv(path)
    assert frame["accents"].tolist() == ["México"]


def test_malformed_rows_are_counted_not_lost_silently(tmp_path):
    path = tmp_path / "validated.tsv"
    path.write_text("client_id\tpath\taccents\nx\ta.mp3\tMéxico\ny\tb.mp3\tMéxico\textra\tfields\n")
    frame, malformed = read_tsv(path)
    assert len(frame) == 1 and malformed == 1


def test_missing_required_column_names_file_and_columns(tmp_path):
    path = tmp_path / "validated.tsv"
    path.write_text("client_id\tsentence\nx\thola\n")
    with pytest.raises(StageError, match=r"validated.tsv: missing column\(s\) path, accents"):
        read_tsv(path)


def test_durations_from_clip_durations_tsv(tmp_path):
    write_tsv(tmp_path / "clip_durations.tsv", ["clip", "duration[ms]"], [{"clip": "a.mp3", "duration[ms]": 4250}])
    assert read_durations(tmp_path) == {"a.mp3": 4.25}
    assert read_durations(tmp_path / "nothing") is None


# --------------------------------------------------------------------------- damaged TSVs, counted exactly
def _records(n: int = 20) -> list[list[str]]:
    """n records of the 16.x columns: path r<i>.mp3, sentence 'Frase <i>.'."""
    return [[speaker_id(i), f"r{i:02d}.mp3", f"Frase {i}.", "2", "0", "", "", MEXICO, "", "es", ""]
            for i in range(n)]


def _table(records: list[list[str]], eol: str = "\n", final_eol: bool = True, blank_after: tuple = ()) -> str:
    lines = ["\t".join(HEADER_16)]
    for i, record in enumerate(records):
        lines.append("\t".join(record))
        if i in blank_after:
            lines.append("")
    return eol.join(lines) + (eol if final_eol else "")


def _damaged(sentence: str | None = None, row: int = 13, **table) -> str:
    records = _records()
    if sentence is not None:
        records[row][2] = sentence
    return _table(records, **table)


# (name, file text, kept, malformed, the damaged row's sentence when it is kept)
DAMAGED_TSVS = [
    ("clean", _damaged(), 20, 0, "Frase 13."),
    ("clean, no final newline", _damaged(final_eol=False), 20, 0, "Frase 13."),
    ("clean, CRLF", _damaged(eol="\r\n"), 20, 0, "Frase 13."),
    ("blank lines between rows and at the end", _damaged(blank_after=(3, 19)), 20, 0, "Frase 13."),
    ("LF inside a sentence (the issue's example)", _damaged("Primera línea\nsegunda línea"), 20, 0,
     "Primera línea\nsegunda línea"),
    ("LF inside a sentence, no final newline", _damaged("Primera línea\nsegunda línea", final_eol=False), 20, 0,
     "Primera línea\nsegunda línea"),
    ("LF inside the last row's sentence", _damaged("uno\ndos", row=19), 20, 0, "uno\ndos"),
    ("LF inside the last row's sentence, no final newline", _damaged("uno\ndos", row=19, final_eol=False), 20, 0,
     "uno\ndos"),
    ("two LFs inside a sentence", _damaged("uno\ndos\ntres"), 20, 0, "uno\ndos\ntres"),
    ("an empty line inside a sentence", _damaged("uno\n\ndos"), 20, 0, "uno\n\ndos"),
    ("CRLF inside a sentence of a CRLF file", _damaged("uno\r\ndos", eol="\r\n"), 20, 0, "uno\ndos"),
    ("CR alone inside a sentence", _damaged("uno\rdos"), 20, 0, "uno\rdos"),
    ("U+2028 and U+0085 inside a sentence", _damaged("uno\u2028dos\x85tres"), 20, 0, "uno\u2028dos\x85tres"),
    ("LF at the end of a sentence", _damaged("uno\n"), 20, 0, "uno\n"),
    ("TAB inside a sentence, no final newline (the issue's example)",
     _damaged("uno\tdos", final_eol=False), 19, 1, None),
    ("TAB inside a sentence", _damaged("uno\tdos"), 19, 1, None),
    ("TAB and LF inside a sentence", _damaged("uno\tdos\ntres"), 19, 1, None),
    ("TAB inside the last sentence, CRLF, blank lines", _damaged("a\tb", row=19, eol="\r\n", blank_after=(2,)),
     19, 1, None),
]


@pytest.mark.parametrize("name, text, kept, malformed, sentence", DAMAGED_TSVS, ids=[d[0] for d in DAMAGED_TSVS])
def test_every_record_of_a_damaged_tsv_is_kept_or_counted_once(tmp_path, name, text, kept, malformed, sentence):
    path = tmp_path / "validated.tsv"
    path.write_bytes(text.encode("utf-8"))
    frame, bad = read_tsv(path)
    assert (len(frame), bad) == (kept, malformed)
    assert len(frame) + bad == 20
    assert frame["path"].is_unique and set(frame["path"]) <= {f"r{i:02d}.mp3" for i in range(20)}
    assert (frame["client_id"].str.len() == 128).all()  # no sentence tail became a row
    damaged = frame[frame["path"] == ("r19.mp3" if "last" in name else "r13.mp3")]
    if sentence is None:
        assert damaged.empty
    else:
        assert damaged["sentence"].tolist() == [sentence] and damaged["accents"].tolist() == [MEXICO]


def test_a_truncated_last_record_is_one_malformed_row(tmp_path):
    path = tmp_path / "validated.tsv"
    text = _table(_records())
    path.write_text(text[: text.rindex(MEXICO)], encoding="utf-8")  # cut inside the last record
    frame, bad = read_tsv(path)
    assert (len(frame), bad) == (19, 1)
