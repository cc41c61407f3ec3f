#!/usr/bin/env python3
# The project's copy of the reference HR export generator (shared/bench/gen_hris.py): same format,
# same output for a given seed. Kept byte-for-byte apart from these lines, hence the lint waiver.
# ruff: noqa: RUF001, E501, SIM115
"""Generate a realistic HRIS worker export (Workday-style CSV) for benchmarks and demos.

Usage:
  gen_hris.py --people 100000 --seed 1 --out day0.csv
  gen_hris.py --from day0.csv --joiners 0.01 --movers 0.02 --leavers 0.01 --seed 2 --out day1.csv

The second form derives the next day's export from an earlier one: it adds joiners,
changes department/title/manager/location of movers, and marks leavers
Terminated with today's termination date (rows stay in the export, as HR systems keep them).
Deterministic for a given seed. Standard library only.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import sys
import unicodedata

FIELDS = [
    "employee_id", "first_name", "last_name", "preferred_name", "work_email",
    "department", "cost_center", "job_title", "manager_id", "location", "country",
    "employment_type", "status", "hire_date", "termination_date", "github_username",
]

FIRST = ["Ana", "Bob", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Hiroshi", "Ines", "José",
         "Kwame", "Li", "María José", "Nora", "Oğuz", "Priya", "Quinn", "Rūta", "Søren", "Tomás",
         "Uma", "Vikram", "Wei", "Xiomara", "Yusuf", "Zoë", "Mary-Kate", "Jean-Luc", "Åsa", "Björn"]
LAST = ["Smith", "O'Brien", "Müller", "García", "Nguyen", "Kowalski", "Ødegaard", "Dubois",
        "van der Berg", "Ng", "Papadopoulos", "Øyen", "Tanaka", "Silva", "Ivanova", "D'Angelo",
        "Johnson", "Al-Sayed", "Kim", "Brown", "Schäfer", "Novák", "Wong", "Singh", "Lee"]
DEPTS = [("Engineering", 0.35), ("Sales", 0.18), ("Customer Success", 0.10), ("Marketing", 0.08),
         ("Finance", 0.06), ("People", 0.05), ("Legal", 0.03), ("Security", 0.04),
         ("Data Science", 0.06), ("IT", 0.05)]
TITLES = {
    "Engineering": ["Software Engineer", "Senior Software Engineer", "Staff Engineer", "Engineering Manager", "SRE"],
    "Sales": ["Account Executive", "Sales Manager", "SDR"],
    "Customer Success": ["CSM", "Support Engineer", "Support Manager"],
    "Marketing": ["Marketing Manager", "Content Writer", "Designer"],
    "Finance": ["Accountant", "Controller", "FP&A Analyst"],
    "People": ["HR Business Partner", "Recruiter", "People Ops"],
    "Legal": ["Counsel", "Paralegal"],
    "Security": ["Security Engineer", "Security Analyst", "CISO"],
    "Data Science": ["Data Scientist", "ML Engineer", "Analytics Manager"],
    "IT": ["IT Admin", "Helpdesk", "IT Manager"],
}
LOCS = [("Berlin", "DE"), ("London", "GB"), ("New York", "US"), ("San Francisco", "US"),
        ("Dublin", "IE"), ("Bangalore", "IN"), ("Tokyo", "JP"), ("São Paulo", "BR"), ("Remote", "US")]

_DEPT_NO = {name: i + 1 for i, (name, _) in enumerate(DEPTS)}


def _pick_dept(rng: random.Random) -> str:
    r, acc = rng.random(), 0.0
    for name, w in DEPTS:
        acc += w
        if r < acc:
            return name
    return DEPTS[-1][0]


def _slug(s: str) -> str:
    folded = unicodedata.normalize("NFKD", s.replace("ø", "o").replace("Ø", "O").replace("ı", "i"))
    return "".join(c for c in folded.lower() if c.isascii() and c.isalnum())


def _person(rng: random.Random, n: int, today: dt.date, emails: dict[str, int]) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    base = f"{_slug(first)}.{_slug(last)}"
    k = emails[base] = emails.get(base, 0) + 1
    email = f"{base}{k if k > 1 else ''}@example.com"
    dept = _pick_dept(rng)
    city, country = rng.choice(LOCS)
    hire = today - dt.timedelta(days=rng.randint(0, 3650))
    status, term = "Active", ""
    roll = rng.random()
    if roll < 0.02:  # pre-hire: starts in the future
        status, hire = "Pre-hire", today + dt.timedelta(days=rng.randint(1, 30))
    elif roll < 0.03:  # leave of absence
        status = "Leave"
    return {
        "employee_id": f"E{n:07d}",
        "first_name": first,
        "last_name": last,
        "preferred_name": first if rng.random() < 0.9 else first[:3],
        "work_email": email,
        "department": dept,
        "cost_center": f"CC-{_DEPT_NO[dept] * 100 + rng.randint(0, 9)}",
        "job_title": rng.choice(TITLES[dept]),
        "manager_id": "",
        "location": city,
        "country": country,
        "employment_type": "Contractor" if rng.random() < 0.08 else "Employee",
        "status": status,
        "hire_date": hire.isoformat(),
        "termination_date": term,
        "github_username": (base.replace(".", "-") + (str(k) if k > 1 else "")) if dept in ("Engineering", "Data Science", "Security", "IT") else "",
    }


def _assign_managers(rows: list[dict[str, str]], rng: random.Random) -> None:
    """Each person reports to someone earlier in the same department: a tree, no cycles."""
    by_dept: dict[str, list[str]] = {}
    for r in rows:
        peers = by_dept.setdefault(r["department"], [])
        if peers:
            r["manager_id"] = peers[rng.randint(0, (len(peers) - 1) // 8)]
        peers.append(r["employee_id"])


def generate(people: int, seed: int, today: dt.date) -> list[dict[str, str]]:
    rng = random.Random(seed)
    emails: dict[str, int] = {}
    rows = [_person(rng, i + 1, today, emails) for i in range(people)]
    _assign_managers(rows, rng)
    return rows


def evolve(rows: list[dict[str, str]], seed: int, today: dt.date, joiners: float, movers: float, leavers: float) -> list[dict[str, str]]:
    rng = random.Random(seed)
    emails: dict[str, int] = {}
    for r in rows:  # highest suffix used per name, so new addresses stay unique
        local = r["work_email"].split("@")[0]
        base = local.rstrip("0123456789")
        emails[base] = max(emails.get(base, 0), int(local[len(base):] or 1))
    active = [r for r in rows if r["status"] in ("Active", "Leave")]
    n_leave, n_move = int(len(active) * leavers), int(len(active) * movers)
    sample = rng.sample(active, min(len(active), n_leave + n_move))
    for r in sample[:n_leave]:
        r["status"], r["termination_date"] = "Terminated", today.isoformat()
    for r in sample[n_leave:]:
        dept = _pick_dept(rng)
        r["department"], r["job_title"] = dept, rng.choice(TITLES[dept])
        if rng.random() < 0.3:
            r["location"], r["country"] = rng.choice(LOCS)
    for r in rows:  # pre-hires whose start date arrived become active
        if r["status"] == "Pre-hire" and r["hire_date"] <= today.isoformat():
            r["status"] = "Active"
    next_id = max(int(r["employee_id"][1:]) for r in rows) + 1
    for i in range(int(len(active) * joiners)):
        p = _person(rng, next_id + i, today, emails)
        p["status"], p["hire_date"] = "Active", today.isoformat()
        p["manager_id"] = rng.choice(active)["employee_id"]
        rows.append(p)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--from", dest="src", help="earlier export to evolve")
    ap.add_argument("--joiners", type=float, default=0.01)
    ap.add_argument("--movers", type=float, default=0.02)
    ap.add_argument("--leavers", type=float, default=0.01)
    ap.add_argument("--today", default="2026-11-23")
    ap.add_argument("--out", default="-")
    a = ap.parse_args(argv)
    today = dt.date.fromisoformat(a.today)
    if a.src:
        with open(a.src, newline="", encoding="utf-8") as f:
            rows = evolve(list(csv.DictReader(f)), a.seed, today, a.joiners, a.movers, a.leavers)
    else:
        rows = generate(a.people, a.seed, today)
    out = sys.stdout if a.out == "-" else open(a.out, "w", newline="", encoding="utf-8")
    w = csv.DictWriter(out, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    if out is not sys.stdout:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
