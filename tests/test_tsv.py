"""The EcoTaxa TSV format: typed values, reading files, problem reports."""

from __future__ import annotations

import pytest

from ecotaxa_core.tsv import (ImportReport, TsvFormatError, format_float, parse_date, parse_float,
                              parse_int, parse_latitude, parse_longitude, parse_status, parse_time,
                              read_tsv)


# -- values -------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("12.5", 12.5), (" -3 ", -3.0), ("1e3", 1000.0), ("", None), ("NaN", None), ("na", None),
    ("-inf", None), ("inf", None)])
def test_float_values(text, expected):
    assert parse_float(text) == expected


@pytest.mark.parametrize("text", ["a", "1,5", "12..3", "--1"])
def test_bad_floats_are_refused(text):
    with pytest.raises(ValueError, match="invalid number"):
        parse_float(text)


def test_integers():
    assert parse_int("3") == 3 and parse_int("3.0") == 3 and parse_int("") is None
    with pytest.raises(ValueError, match="invalid integer"):
        parse_int("3.5")


@pytest.mark.parametrize("text, expected", [
    ("18.0", 18.0), ("-44.72543333333333", -44.72543333333333),
    ("43°00 0", 43.0),  # UVP6 "DD°MM SS"
    ("43°30 36", 43.51),
    ("43°30.5", 43 + 30.5 / 60),  # "DD°MM.mm"
    ("-7°15 00", -7.25), ("7°15'00\"S", -7.25), ("12°30N", 12.5)])
def test_latitudes(text, expected):
    assert parse_latitude(text) == pytest.approx(expected)
    assert parse_latitude("") is None


def test_longitudes_accept_up_to_180():
    assert parse_longitude("145.5351") == 145.5351
    assert parse_longitude("-179°59 59") == pytest.approx(-(179 + 59 / 60 + 59 / 3600))
    assert parse_longitude("10°W") == -10.0


@pytest.mark.parametrize("parser, text, match", [
    (parse_latitude, "100", r"latitude '100' \(must be within -90/\+90°\)"),
    (parse_latitude, "-90.5", "must be within"),
    (parse_longitude, "200", r"longitude '200' \(must be within -180/\+180°\)"),
    (parse_latitude, "abc", "invalid latitude 'abc'"),
    (parse_latitude, "43°75 00", "invalid latitude"),  # minutes >= 60
    (parse_longitude, "12°30 61", "invalid longitude"),  # seconds >= 60
    (parse_latitude, "12°x", "invalid latitude"),
])
def test_bad_coordinates(parser, text, match):
    with pytest.raises(ValueError, match=match):
        parser(text)


@pytest.mark.parametrize("text, expected", [
    ("20140420", "2014-04-20"), ("2014-04-20", "2014-04-20"), ("", None), ("20000229", "2000-02-29")])
def test_dates(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", ["20140433", "2015-11-31", "2014-0420", "14-04-20", "2014/04/20",
                                  "20190229", "April 1st"])
def test_bad_dates(text):
    with pytest.raises(ValueError, match="invalid date"):
        parse_date(text)


@pytest.mark.parametrize("text, expected", [
    ("420", "04:20:00"), ("0420", "04:20:00"), ("153100", "15:31:00"), ("080729", "08:07:29"),
    ("15:31:00", "15:31:00"), ("15:31", "15:31:00"), ("5", "00:05:00"), ("", None)])
def test_times(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["9920", "5:31", "2460", "12:61:00", "1531000", "noon"])
def test_bad_times(text):
    with pytest.raises(ValueError, match="invalid time"):
        parse_time(text)


@pytest.mark.parametrize("text, expected", [
    ("predicted", "predicted"), ("P", "predicted"), ("Validated", "validated"), ("v", "validated"),
    ("dubious", "dubious"), ("D", "dubious"), ("", "unclassified")])
def test_statuses(text, expected):
    assert parse_status(text) == expected


def test_bad_status():
    with pytest.raises(ValueError, match="invalid annotation status 'predit'"):
        parse_status("predit")


def test_floats_format_back_to_the_same_value():
    for v in (241.039993286133, 13.1000003814697, 2.0, -0.1, 1e-12):
        assert float(format_float(v)) == v
    assert format_float(None) == "" and format_float(float("nan")) == ""


# -- reading files --------------------------------------------------------------
def _write(path, text: str, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_reader_decodes_utf8_bom_and_latin1(tmp_path):
    body = "object_id\tobject_lat\tobject_site\timg_file_name\n[t]\t[t]\t[t]\t[t]\n" \
           "o1\t43°00 0\tBaie de Villefranche é\ta.png\n"
    for enc, name in (("utf-8-sig", "bom"), ("latin-1", "latin"), ("utf-8", "plain")):
        report = ImportReport()
        table = read_tsv(_write(tmp_path / f"ecotaxa_{name}.tsv", body, enc), name, report)
        row = next(table.rows())
        assert table.value(row, "object_lat") == "43°00 0"
        assert table.value(row, "object_site").endswith("é")
        assert [c.name for c in table.columns][0] == "object_id"
        assert report.n_issues == 0


def test_reader_handles_quotes_lines_and_types(tmp_path):
    path = _write(tmp_path / "ecotaxa_q.txt",
                  '"object_id"\t"Object_Area"\t"img_file_name"\n"[t]"\t"[F]"\t"[t]"\n'
                  '"o1"\t"12"\t"a.png"\n\n"o2"\t"13"\t"b.png"\n')
    report = ImportReport()
    table = read_tsv(path, "ecotaxa_q.txt", report)
    assert report.n_issues == 0
    assert [(c.name, c.type, c.free) for c in table.columns] == [
        ("object_id", "t", False), ("object_area", "f", True), ("img_file_name", "t", False)]
    assert [r.line for r in table.rows()] == [3, 5]  # the blank line 4 is skipped


def test_reader_reports_structure_problems_with_line_and_column(tmp_path):
    path = _write(tmp_path / "ecotaxa_bad.tsv",
                  "nounderscore\tfoo_bar\tobject_x\tobject_x\timg_thumb\tobject_id\tsample_ship\n"
                  "[t]\t[t]\t[H]\t[t]\t[t]\t[t]\t[t]\n"
                  "a\tb\tc\td\te\to1\tmeteor\tstray\n")
    report = ImportReport("src")
    table = read_tsv(path, "ecotaxa_bad.tsv", report)
    list(table.rows())
    found = {(i.line, i.column, i.code) for i in report.issues}
    assert found == {
        (1, "nounderscore", "bad_header"), (1, "foo_bar", "unknown_prefix"),
        (2, "object_x", "bad_type"), (1, "object_x", "duplicate_column"),
        (1, "img_thumb", "unknown_column"), (1, "img_file_name", "missing_column"),
        (1, "sample_id", "missing_column"), (3, None, "extra_values")}
    assert [c.name for c in table.columns] == ["object_id", "sample_ship"]
    text = str(TsvFormatError(report))
    assert text.startswith("8 problems in src:")
    assert "ecotaxa_bad.tsv line 2, column object_x: invalid type '[H]'" in text
    assert "ecotaxa_bad.tsv line 3: value(s) ['stray'] in column(s) without a header" in text


def test_reader_reports_empty_files_and_missing_data(tmp_path):
    report = ImportReport()
    assert read_tsv(_write(tmp_path / "ecotaxa_0.tsv", ""), "ecotaxa_0.tsv", report) is None
    list(read_tsv(_write(tmp_path / "ecotaxa_1.tsv", "object_id\timg_file_name\n[t]\t[t]\n"),
                  "ecotaxa_1.tsv", report).rows())  # no_data: found when the rows are read
    read_tsv(_write(tmp_path / "ecotaxa_2.tsv", "object_id\timg_file_name\n"), "ecotaxa_2.tsv",
             report)
    assert [(i.path, i.line, i.code) for i in report.issues] == [
        ("ecotaxa_0.tsv", 1, "empty_file"), ("ecotaxa_1.tsv", 3, "no_data"),
        ("ecotaxa_2.tsv", 2, "missing_type_line")]


def test_a_missing_type_line_is_one_problem_not_one_per_column(tmp_path):
    path = _write(tmp_path / "ecotaxa_nt.tsv",
                  "object_id\tobject_a\tobject_b\timg_file_name\no1\t1\t2\ta.png\n")
    report = ImportReport()
    list(read_tsv(path, "ecotaxa_nt.tsv", report).rows())
    assert [(i.line, i.code) for i in report.issues] == [(2, "bad_type_line"), (3, "no_data")]


def test_report_caps_issues_per_file_but_counts_all():
    report = ImportReport("x", max_per_file=3)
    for line in range(3, 13):
        report.add("a.tsv", line, "object_lat", "100", "bad_lat", "invalid latitude")
    report.add("b.tsv", 3, None, None, "no_data", "no data")
    assert report.n_issues == 11 and len(report.issues) == 4
    text = str(report)
    assert "11 problems in x:" in text and "... and 7 more in a.tsv" in text
    assert "b.tsv line 3: no data" in text


# -- values from the field: EcoTaxa's forms, and what it does not accept -----------------------
@pytest.mark.parametrize("text, expected", [
    ("43º30 36", 43.51), ("43˚30.6", 43.51), ("43°30'36\"N", 43.51), ("43° 30' 36'' S", -43.51),
    ("12.5S", -12.5), ("12.5 n", 12.5), ("+3", 3.0), ("-0°30", -0.5), ("0°30 S", -0.5),
    ("NaN", None), ("na", None)])
def test_coordinates_in_field_notations(text, expected):
    assert parse_latitude(text) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("parser, text, match", [
    (parse_latitude, "12°30E", r"latitude '12°30E' \(hemisphere 'E': expected N or S\)"),
    (parse_longitude, "12.5N", r"hemisphere 'N': expected E or W"),
    (parse_latitude, "-12°30S", "give a sign or a hemisphere letter, not both"),
    (parse_latitude, "43,5", r"latitude '43,5' \(use a dot as decimal separator\)"),
    (parse_latitude, "inf", "invalid latitude 'inf'"),
    (parse_longitude, "1e5", r"must be within -180/\+180°"),
])
def test_ambiguous_coordinates_are_refused(parser, text, match):
    with pytest.raises(ValueError, match=match):
        parser(text)


@pytest.mark.parametrize("text", ["1_000", "１２", "0x10", "1.5.2", "12 kg", "- 3"])
def test_only_plain_ascii_numbers_are_numbers(text):
    with pytest.raises(ValueError, match="invalid number"):
        parse_float(text)


def test_a_decimal_comma_gets_a_hint():
    with pytest.raises(ValueError, match=r"invalid number '1,5' \(use a dot as decimal "
                                         r"separator\)"):
        parse_float("1,5")
    assert parse_float("1e999") is None and parse_float("+infinity") is None


def test_integers_must_fit_the_database():
    assert parse_int("2147483647") == 2**31 - 1 and parse_int("-2147483648") == -2**31
    for text in ("2147483648", "1e12", "-3e9"):
        with pytest.raises(ValueError, match="out of range"):
            parse_int(text)


def test_long_values_are_cut_in_messages():
    with pytest.raises(ValueError) as err:
        parse_float("z" * 100_000)
    assert len(str(err.value)) < 120 and "(100,000 characters)" in str(err.value)
    with pytest.raises(ValueError, match=r"invalid time '9{60}\.\.\.' \(100 characters\) "
                                         r"\(expected HHMM"):
        parse_time("9" * 100)


# -- hostile and odd files --------------------------------------------------------------------
def _read(path, data: bytes, **limits):
    path.write_bytes(data)
    report = ImportReport()
    table = read_tsv(path, path.name, report, **limits)
    if table is not None:  # rows are read (and checked) as they are asked for
        table = _Read(table, list(table.rows()))
    return table, report


class _Read:
    """A table and its rows, read once."""

    def __init__(self, table, rows):
        self.table, self.columns, self.value, self._rows = table, table.columns, table.value, rows

    def rows(self):
        return iter(self._rows)


def _issues(report):
    return [(i.line, i.column, i.code) for i in report.issues]


BODY = "object_id\timg_file_name\tobject_site\n[t]\t[t]\t[t]\n"


def test_nul_bytes_make_a_file_binary_with_their_place(tmp_path):
    table, report = _read(tmp_path / "ecotaxa_b.tsv", (BODY + "o1\ta.png\tsea\x00\n").encode())
    assert table is None
    assert _issues(report) == [(3, "object_site", "not_text")]
    assert "NUL character (binary data) at line 3, character 13" in report.issues[0].message
    _, report = _read(tmp_path / "ecotaxa_c.tsv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert _issues(report) == [(3, None, "not_text")]  # CR, CRLF: the NUL is on line 3


def test_utf16_and_mixed_encodings_decode(tmp_path):
    text = BODY + "o1\ta.png\tVillefranche é °\n"
    table, report = _read(tmp_path / "ecotaxa_16.tsv", text.encode("utf-16"))
    assert report.n_issues == 0 and table.value(next(table.rows()), "object_site").endswith("é °")
    # A UTF-8 file with a BOM and one Latin-1 line: each line decodes on its own.
    data = b"\xef\xbb\xbf" + BODY.encode() + "o1\ta.png\tcafé\n".encode() \
        + "o2\ta.png\t43°\n".encode("latin-1")
    table, report = _read(tmp_path / "ecotaxa_mix.tsv", data)
    assert report.n_issues == 0 and table.columns[0].name == "object_id"
    assert [table.value(r, "object_site") for r in table.rows()] == ["café", "43°"]
    _, report = _read(tmp_path / "ecotaxa_bad16.tsv", b"\xff\xfe" + "o\t".encode("utf-16-le")
                      + b"\x00\xd8")  # a lone surrogate
    assert [i.code for i in report.issues] == ["not_text"]


def test_line_ends_blank_lines_and_trailing_columns(tmp_path):
    data = b"object_id\timg_file_name\t\t\r[t]\t[t]\t\t\r\no1\ta.png\t\t\n\r\no2\ta.png\r"
    table, report = _read(tmp_path / "ecotaxa_le.tsv", data)
    assert report.n_issues == 0
    assert [(r.line, table.value(r, "object_id")) for r in table.rows()] == [(3, "o1"), (5, "o2")]


def test_header_shorter_or_longer_than_data_lines(tmp_path):
    table, report = _read(tmp_path / "ecotaxa_w.tsv",
                          (BODY + "o1\ta.png\n" + "o2\ta.png\tx\t\t\n"
                           + "o3\ta.png\tx\ty\tz\n").encode())
    assert [table.value(r, "object_site") for r in table.rows()] == ["", "x", "x"]
    assert _issues(report) == [(5, None, "extra_values")]
    assert "value(s) ['y', 'z'] in column(s) without a header" in report.issues[0].message


def test_duplicate_columns_differing_by_case_or_spaces(tmp_path):
    _, report = _read(tmp_path / "ecotaxa_d.tsv",
                      b"object_id\timg_file_name\tObject_Area\t object_area \n[t]\t[t]\t[f]\t[f]\n"
                      b"o1\ta.png\t1\t2\n")
    assert _issues(report) == [(1, "object_area", "duplicate_column")]


def test_quotes_follow_the_csv_rules_ecotaxa_reads_with(tmp_path):
    table, report = _read(tmp_path / "ecotaxa_q.tsv", (
        BODY + 'o1\ta.png\t"say ""hi"""\n' + 'o2\ta.png\t5" long\n'
        + 'o3\ta.png\t"two\nlines"\n' + "o4\ta.png\tit's\n").encode())
    assert report.n_issues == 0
    assert [(r.line, table.value(r, "object_site")) for r in table.rows()] == [
        (3, 'say "hi"'), (4, '5" long'), (5, "two\nlines"), (7, "it's")]


def test_an_unclosed_quote_does_not_swallow_the_file(tmp_path):
    _, report = _read(tmp_path / "ecotaxa_u.tsv",
                      (BODY + 'o1\ta.png\t"oops\no2\ta.png\tx\n').encode())
    assert _issues(report) == [(3, None, "unclosed_quote")]
    # Closed further down, the quote makes one value of several lines, tabs included
    # (exports quote values holding tabs and line breaks this way).
    table, report = _read(tmp_path / "ecotaxa_r.tsv",
                          (BODY + 'o1\ta.png\t"tab\there\nnew line"\no3\ta.png\tx\n').encode())
    assert report.n_issues == 0
    assert [table.value(r, "object_site") for r in table.rows()] == ["tab\there\nnew line", "x"]


def test_limits_on_lines_and_values(tmp_path):
    data = (BODY + "o1\ta.png\t" + "v" * 500 + "\n").encode()
    _, report = _read(tmp_path / "ecotaxa_l.tsv", data, max_line_chars=400)
    assert _issues(report) == [(3, None, "line_too_long")]
    _, report = _read(tmp_path / "ecotaxa_f.tsv", data, max_field_chars=300)
    assert _issues(report) == [(3, "object_site", "field_too_long")]
    assert report.issues[0].value == "v" * 60 + "..."
    _, report = _read(tmp_path / "ecotaxa_h.tsv", data, max_file_bytes=100)
    assert _issues(report) == [(None, None, "file_too_large")]
    # Past the csv module's own limit (131,072), with the column named all the same.
    _, report = _read(tmp_path / "ecotaxa_g.tsv",
                      (BODY + "o1\ta.png\t" + "w" * 140_000 + "\n").encode())
    assert _issues(report) == [(3, "object_site", "field_too_long")]


def test_predefined_text_must_fit_the_database(tmp_path):
    _, report = _read(tmp_path / "ecotaxa_t.tsv", (
        "object_id\timg_file_name\tobject_annotation_person_email\n[t]\t[t]\t[t]\n"
        f"{'i' * 256}\t{'n' * 513}\t{'e' * 255}\n").encode())
    assert _issues(report) == [(3, "object_id", "text_too_long"),
                               (3, "img_file_name", "text_too_long")]
    assert "longer than the 512 characters it may hold" in str(report)


@pytest.mark.parametrize("name, reason", [
    ("object_", "no field name after the prefix"), ("object_a\x07b", "control characters"),
    ("object_" + "c" * 260, "longer than 255 characters")])
def test_column_names_that_cannot_be_columns(tmp_path, name, reason):
    _, report = _read(tmp_path / "ecotaxa_n.tsv",
                      f"object_id\timg_file_name\t{name}\n[t]\t[t]\t[t]\no1\ta.png\tx\n".encode())
    assert [(i.line, i.code) for i in report.issues] == [(1, "bad_header")]
    assert reason in report.issues[0].message and len(report.issues[0].message) < 200
