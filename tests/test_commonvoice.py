import pytest

from pipeline.commonvoice import read_durations, read_tsv, split_accents
from pipeline.errors import StageError
from tests.helpers import CENTRO, HEADER_16, HEADER_17, MEXICO, NORTE, SUR, speaker_id, write_tsv


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
