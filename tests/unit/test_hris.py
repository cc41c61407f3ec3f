"""Parsing HR exports: profiles, formats, quarantine, rejection, hash skipping."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from jml.errors import ConfigError, ExportRejected
from jml.model import CANONICAL_FIELDS, Status
from jml.sources.hris import ParsedExport, health_problems, parse_date, parse_export
from jml.sources.profiles import PRESETS, PROFILE_STATUS_VALUES, resolve_profile

ROOT = Path(__file__).resolve().parents[2]


def row(**over: str) -> dict[str, str]:
    base = {f: "" for f in CANONICAL_FIELDS}
    base.update(employee_id="E1", first_name="Ana", last_name="Smith", work_email="ana@x.example",
                department="Engineering", status="Active", hire_date="2020-01-02")
    base.update(over)
    return base


def to_csv(rows: list[dict[str, str]], fields: list[str] | None = None) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=fields or list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


def parse(data: bytes, name: str = "x.csv", **kw: object) -> ParsedExport:
    return parse_export(data, name=name, format=None, **kw)  # type: ignore[arg-type]


# --- profiles -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_yaml_profiles_match_python_presets(name: str) -> None:
    doc = yaml.safe_load((ROOT / "config" / "profiles" / f"{name}.yaml").read_text(encoding="utf-8"))
    assert doc["profile"] == name
    assert doc["columns"] == PRESETS[name]
    assert doc["status_values"] == PROFILE_STATUS_VALUES[name]


def test_unknown_profile_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sources\.hris\.profile"):
        resolve_profile("peoplesoft")


@pytest.mark.parametrize(("columns", "status_values", "key"), [
    ({"employee_number": "X"}, None, "sources.hris.columns.employee_number"),
    (None, {"Gone": "Fired"}, "sources.hris.status_values.Gone"),
])
def test_bad_overrides_name_the_key(columns: dict[str, str] | None, status_values: dict[str, str] | None,
                                    key: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_profile("generic", columns, status_values)
    assert e.value.path == key


WORKDAY_ROW = {"Employee_ID": "21001", "Legal_Name_First_Name": "Pat", "Legal_Name_Last_Name": "Lee",
               "Work_Email": "pat@acme.example", "Supervisory_Organization": "Engineering",
               "Business_Title": "SRE", "Manager_ID": "21000", "Worker_Type": "Employee",
               "Active_Status": "1", "Hire_Date": "2021-03-01-08:00", "Termination_Date": "",
               "Company": "Acme GmbH"}
BAMBOO_ROW = {"employeeNumber": "7", "firstName": "Kim", "lastName": "Ng", "workEmail": "kim@acme.example",
              "department": "Sales", "division": "EMEA", "jobTitle": "AE", "supervisorEId": "3",
              "employmentHistoryStatus": "Full-Time", "status": "Inactive", "hireDate": "2019-05-06",
              "terminationDate": "0000-00-00"}


@pytest.mark.parametrize(("profile", "raw", "name", "expect"), [
    ("workday", WORKDAY_ROW, "r.csv", dict(employee_id="21001", first_name="Pat", work_email="pat@acme.example",
                                           department="Engineering", job_title="SRE", manager_id="21000",
                                           status=Status.ACTIVE, hire_date=dt.date(2021, 3, 1))),
    ("workday", WORKDAY_ROW, "r.json", dict(employee_id="21001", status=Status.ACTIVE, employment_type="Employee")),
    ("bamboohr", BAMBOO_ROW, "r.json", dict(employee_id="7", first_name="Kim", manager_id="3",
                                            employment_type="Full-Time", status=Status.TERMINATED,
                                            termination_date=None)),
    ("bamboohr", BAMBOO_ROW, "r.jsonl", dict(department="Sales", hire_date=dt.date(2019, 5, 6))),
])
def test_profiles_map_vendor_columns(profile: str, raw: dict[str, str], name: str, expect: dict[str, object]) -> None:
    if name.endswith(".csv"):
        data = to_csv([raw])
    elif name.endswith(".jsonl"):
        data = (json.dumps(raw) + "\n").encode()
    elif profile == "workday":
        data = json.dumps({"Report_Entry": [raw]}).encode()
    else:
        data = json.dumps({"title": "r", "fields": [], "employees": [raw]}).encode()
    res = parse(data, name, profile=profile)
    assert res.quarantined == []
    (person,) = res.people
    for key, value in expect.items():
        assert getattr(person, key) == value, key
    unmapped = "Company" if profile == "workday" else "division"
    assert person.get(unmapped) == raw[unmapped]


def test_custom_columns_override_and_are_required() -> None:
    data = to_csv([{"Personalnummer": "9", "Status": "aktiv", "Mail": "a@b.c"}])
    res = parse(data, columns={"employee_id": "Personalnummer", "status": "Status", "work_email": "Mail"},
                status_values={"aktiv": "Active"})
    assert res.people[0].employee_id == "9" and res.people[0].status is Status.ACTIVE
    with pytest.raises(ExportRejected, match=r"cost_center.*'KST'"):
        parse(data, columns={"employee_id": "Personalnummer", "status": "Status", "cost_center": "KST"},
              status_values={"aktiv": "Active"})


@pytest.mark.parametrize(("raw", "expect"), [
    ("Active", Status.ACTIVE), (" employed ", Status.ACTIVE), ("TRUE", Status.ACTIVE), ("1", Status.ACTIVE),
    ("Leave of Absence", Status.LEAVE), ("LOA", Status.LEAVE), ("on leave", Status.LEAVE),
    ("Terminated", Status.TERMINATED), ("inactive", Status.TERMINATED), ("0", Status.TERMINATED),
    ("Separated", Status.TERMINATED), ("Pre-hire", Status.PREHIRE), ("prehire", Status.PREHIRE),
    ("Pending", Status.PREHIRE),
])
def test_status_normalisation(raw: str, expect: Status) -> None:
    assert parse(to_csv([row(status=raw)])).people[0].status is expect


@pytest.mark.parametrize(("raw", "expect"), [
    ("2020-12-31", dt.date(2020, 12, 31)), ("2020-12-31-08:00", dt.date(2020, 12, 31)),
    ("2020-12-31T23:59:59.000+01:00", dt.date(2020, 12, 31)), ("2020-12-31Z", dt.date(2020, 12, 31)),
    ("0000-00-00", None), ("", None), ("  ", None),
])
def test_dates(raw: str, expect: dt.date | None) -> None:
    assert parse_date(raw) == expect


@pytest.mark.parametrize("raw", ["31/12/2020", "2020-13-01", "2020-W01-1", "20201231", "2020-12-31-0800x", "soon"])
def test_bad_dates_raise(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_date(raw)


# --- quarantine ---------------------------------------------------------------------------

@pytest.mark.parametrize(("rows", "bad_rows", "field", "ids"), [
    ([row(employee_id="")], [2], "employee_id", set()),
    ([row(status="Retired")], [2], "status", {"E1"}),
    ([row(hire_date="31/12/2020")], [2], "hire_date", {"E1"}),
    ([row(termination_date="tomorrow")], [2], "termination_date", {"E1"}),
    # 23:59 local on 9999-12-31 west of UTC is in year 10000: out of range, like the event path's.
    ([row(status="Terminated", termination_date="9999-12-31")], [2], "termination_date", {"E1"}),
    ([row(hire_date="0001-01-01")], [2], "hire_date", {"E1"}),
    ([row(), row(employee_id="E2", work_email="b@x"), row(work_email="c@x")], [2, 4], "employee_id", {"E1"}),
    ([row(), row(employee_id="E2", work_email="ANA@x.example")], [2, 3], "work_email", {"E1", "E2"}),
])
def test_bad_rows_are_quarantined(rows: list[dict[str, str]], bad_rows: list[int], field: str,
                                  ids: set[str]) -> None:
    good = row(employee_id="E9", work_email="z@x.example")
    res = parse(to_csv([*rows, good]), "day.csv")
    assert [q.row for q in res.quarantined] == bad_rows
    assert {q.field for q in res.quarantined} == {field}
    assert all(q.file == "day.csv" for q in res.quarantined)
    assert res.quarantined_ids == ids
    valid = {p.employee_id for p in res.people}
    assert "E9" in valid and not valid & ids
    assert set(res.row_hashes) == valid
    assert len(res.people) + len(res.quarantined) == res.row_count == len(rows) + 1
    assert str(res.quarantined[0]).startswith(f"day.csv, row {bad_rows[0]}, field {field}")


def test_repeated_values_are_kept_once_and_a_bad_date_fails_every_row_that_has_it() -> None:
    """A first import holds every person while it is planned: the departments, titles and dates
    100k people share are one object each (issue 16's memory per person); a date's refusal is
    not remembered as a value, so each row carrying it is set aside."""
    rows = [row(employee_id=f"E{i}", work_email=f"p{i}@x.example", job_title=" Engineer ") for i in range(3)]
    rows += [row(employee_id=f"B{i}", work_email=f"b{i}@x.example", hire_date="31/12/2020") for i in range(2)]
    res = parse(to_csv(rows))
    a, b, c = res.people
    assert a.department is b.department is c.department and a.job_title is c.job_title == "Engineer"
    assert a.hire_date is b.hire_date is c.hire_date == dt.date(2020, 1, 2)
    assert [(q.row, q.field) for q in res.quarantined] == [(5, "hire_date"), (6, "hire_date")]


def test_terminated_rows_do_not_clash_on_email() -> None:
    # A conversion: the old id is terminated, the new id carries the same address.
    rows = [row(status="Terminated", termination_date="2024-01-31"), row(employee_id="E2")]
    res = parse(to_csv(rows))
    assert res.quarantined == [] and len(res.people) == 2


def test_row_with_wrong_field_count_is_quarantined_not_rejected() -> None:
    text = "employee_id,status,work_email\nE1,Active,a@x,EXTRA\nE2,Active\nE3,Active,c@x\n"
    res = parse(text.encode())
    assert [(q.row, q.field, q.employee_id) for q in res.quarantined] == [(2, "(row)", "E1"), (3, "(row)", "E2")]
    assert [p.employee_id for p in res.people] == ["E3"]


def test_row_numbers_follow_spreadsheet_rows_across_multiline_cells() -> None:
    rows = [row(first_name="two\nlines"), row(employee_id="E2", work_email="b@x", status="??")]
    assert parse(to_csv(rows)).quarantined[0].row == 3


def test_json_row_numbers_and_non_text_values() -> None:
    data = json.dumps([{"employee_id": 1, "status": "Active"}, "junk",
                       {"employee_id": "E3", "status": "Active", "department": ["a"]}]).encode()
    res = parse(data, "x.json")
    assert res.people[0].employee_id == "1"
    assert [(q.row, q.field) for q in res.quarantined] == [(2, "(row)"), (3, "department")]


# --- whole-export rejection ---------------------------------------------------------------

GOOD = to_csv([row(), row(employee_id="E2", work_email="b@x")])


@pytest.mark.parametrize(("data", "name", "pattern"), [
    (b"", "x.csv", "empty"),
    (b"\xef\xbb\xbf\n\n", "x.csv", "empty"),
    (b"employee_id,status\n", "x.csv", "no data rows"),
    (GOOD.replace(b"Smith", b"Sm\xffith"), "x.csv", r"not UTF-8.*0xff at byte offset \d+ \(line 2\)"),
    (b"first_name,status\nAna,Active\n", "x.csv", r"employee_id \(expected column 'employee_id'\)"),
    (b"employee_id\nE1\n", "x.csv", "missing required columns: status"),
    (GOOD[:-10], "x.csv", "cut off"),
    (GOOD + b'E3,"Unterminated', "x.csv", "malformed CSV"),
    (b"employee_id,status,status\nE1,Active,Active\n", "x.csv", "appears twice"),
    (b'[{"employee_id": "E1", "status": "Active"}', "x.json", "invalid JSON at line 1"),
    (b'{"employee_id": "E1"}', "x.json", "expected a list"),
    (b'{"employee_id": "E1", "status": "Active"}\n{"employee_id": "E2", "st', "x.jsonl", "invalid JSON on line 2"),
    (GOOD, "x.txt", "cannot tell the format"),
])
def test_structural_problems_reject_the_export(data: bytes, name: str, pattern: str) -> None:
    with pytest.raises(ExportRejected, match=pattern) as e:
        parse(data, name)
    assert e.value.file == name
    assert e.value.exit_code == 3


def test_bom_is_tolerated_and_offsets_count_it() -> None:
    assert len(parse(b"\xef\xbb\xbf" + GOOD).people) == 2
    with pytest.raises(ExportRejected, match="byte offset 3 "):
        parse(b"\xef\xbb\xbf\xff" + GOOD)


# --- hashes and health --------------------------------------------------------------------

def test_known_hashes_skip_unchanged_rows_but_not_duplicate_checks() -> None:
    day0 = [row(employee_id=f"E{i}", work_email=f"p{i}@x") for i in range(5)]
    first = parse(to_csv(day0))
    assert first.unchanged == 0 and len(first.row_hashes) == 5
    day1 = [dict(r) for r in day0]
    day1[1]["department"] = "Sales"  # a mover
    day1.append(row(employee_id="E9", work_email="p3@x"))  # a joiner reusing E3's address
    second = parse(to_csv(day1), known_hashes=first.row_hashes)
    assert [p.employee_id for p in second.people] == ["E1"]
    assert second.unchanged == 3  # E0, E2, E4; E3 is now quarantined with E9
    assert second.quarantined_ids == {"E3", "E9"}
    assert second.row_hashes["E0"] == first.row_hashes["E0"]
    assert second.row_hashes["E1"] != first.row_hashes["E1"]
    assert set(second.row_hashes) == {"E0", "E1", "E2", "E4"}


def test_hashes_change_with_the_mapping() -> None:
    data = to_csv([row()])
    a = parse(data).row_hashes
    b = parse(data, status_values={"Active": "Leave"}).row_hashes
    assert a != b and a == parse(data).row_hashes


@pytest.mark.parametrize(("last_cols", "expect"), [
    (None, []),
    (("employee_id", "status"), []),
    (("employee_id",), ["column set changed since the last accepted export (added status)"]),
    (("employee_id", "status", "department"),
     ["column set changed since the last accepted export (removed department)"]),
])
def test_health_problems(last_cols: tuple[str, ...] | None, expect: list[str]) -> None:
    """Only the column set: a shrink is the guard's (tests/unit/test_guard.py), held, not rejected."""
    current = ParsedExport(file="f.csv", checksum="", columns=("employee_id", "status"), row_count=90,
                           people=[], row_hashes={}, unchanged=0)
    got = health_problems(current, last_columns=last_cols)
    assert len(got) == len(expect)
    for reason, fragment in zip(got, expect, strict=True):
        assert fragment in reason and reason.startswith("f.csv")


def test_reordered_columns_are_healthy() -> None:
    current = ParsedExport(file="f", checksum="", columns=("b", "a"), row_count=1, people=[], row_hashes={},
                           unchanged=0)
    assert health_problems(current, last_columns=("a", "b")) == []


def test_checksum_is_sha256_of_raw_bytes() -> None:
    import hashlib
    assert parse(GOOD).checksum == hashlib.sha256(GOOD).hexdigest()


# --- round trip ---------------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12).map(str.strip)


@settings(max_examples=80, deadline=None)
@given(names=st.lists(st.tuples(text, text, text), min_size=1, max_size=8), fmt=st.sampled_from(["csv", "json",
                                                                                                  "jsonl"]))
def test_round_trip_arbitrary_names(names: list[tuple[str, str, str]], fmt: str) -> None:
    rows = [row(employee_id=f"E{i}", work_email=f"p{i}@x", first_name=f, last_name=last, department=d)
            for i, (f, last, d) in enumerate(names)]
    if fmt == "csv":
        data = to_csv(rows)
    elif fmt == "json":
        data = json.dumps(rows).encode()
    else:
        data = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    res = parse(data, f"x.{fmt}")
    assert res.quarantined == []
    assert [(p.first_name, p.last_name, p.department) for p in res.people] == names


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_semicolon_or_tab_separated_export_is_read(delimiter: str) -> None:
    """Issue 17: a spreadsheet saved with a European locale read as "missing required columns"."""
    out = io.StringIO()
    rows = [row(), row(employee_id="E2", work_email="bo@x.example", last_name="Müller; Jr")]
    w = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter)
    w.writeheader()
    w.writerows(rows)
    res = parse(out.getvalue().encode())
    assert [p.employee_id for p in res.people] == ["E1", "E2"]
    assert res.people[1].last_name == "Müller; Jr" and res.quarantined == []


def test_a_row_set_aside_names_who_it_is_about() -> None:
    """Issue 17: 'not an email' is a row HR fixes (not a dead letter at the app), and a set-aside
    row carries the person's name and address so it can be found."""
    res = parse(to_csv([row(), row(employee_id="E2", first_name="Grace", last_name="García",
                                   work_email="not an email"),
                        row(employee_id="E3", first_name="Bo", last_name="Li", work_email="bo@x.example",
                            termination_date="31.12.2026")]))
    assert [p.employee_id for p in res.people] == ["E1"]
    bad_email, bad_date = res.quarantined
    assert (bad_email.field, bad_email.name, bad_email.employee_id) == ("work_email", "Grace García", "E2")
    assert "not an e-mail address: 'not an email'" in bad_email.message
    assert (bad_date.field, bad_date.name, bad_date.email) == ("termination_date", "Bo Li", "bo@x.example")
    dup = parse(to_csv([row(), row(employee_id="E2", first_name="Ann", last_name="Dup")]))
    assert {q.name for q in dup.quarantined} == {"Ana Smith", "Ann Dup"}


def test_missing_columns_name_the_delimiter_and_what_was_read() -> None:
    data = b"employee_id|first_name,last_name\nE1|Ana,Smith\n"
    with pytest.raises(ExportRejected) as e:
        parse(data)
    text = str(e.value)
    assert text.startswith("x.csv: missing required columns") and text.count("x.csv") == 1
    assert "the header read with delimiter ',' has 2 column(s): 'employee_id|first_name', 'last_name'" in text
