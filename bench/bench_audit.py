"""The audit log as the console reads it, on a log of 100,000 records (SQLite): the transparency
report (counted by the database) and a page of 50 records under each of the console's filters
(through the log's columns and indexes), each beside the same selection made by reading every
record in Python (the peer: what a filter without columns would cost).

    .venv/bin/python bench/bench_audit.py [--records 100000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import table, timed  # noqa: E402
from facewarden.audit import AuditLog, transparency_report  # noqa: E402
from facewarden.audit.log import AuditFilter  # noqa: E402
from facewarden.db import Database  # noqa: E402

START = 1_750_000_000.0


def fill(a: AuditLog, n: int) -> None:
    """``n`` records over 100 days: 20 keys of 10 organisations, 50 collections, 2% refusals by three
    rules, 1% failures, a third of them the console's reads, every 50th naming a subject. Written
    in one transaction (the bench measures reading)."""
    ops = ["SearchFacesByImage", "IndexFaces", "CompareFaces", "DetectFaces", "ListCollections"]
    with a.db.transaction(lock="audit") as tx:
        for i in range(n):
            a.clock = lambda i=i: START + i * (100 * 86400 / n)
            decision = "denied" if i % 50 == 7 else "failed" if i % 100 == 3 else "allowed"
            a.append(
                {
                    "org": f"org{i % 10}",
                    "sector": "law_enforcement" if i % 10 == 9 else "commercial",
                    "key": f"FWKEY{i % 20:02d}",
                    "purpose": "access_control",
                    "operation": ops[i % len(ops)],
                    "collection": f"c{i % 50}",
                    "decision": decision,
                    "rule": ["moratorium", "purpose", "quota"][i % 3] if decision == "denied" else "purpose",
                    "reason": "bench",
                    "subjects": [a.subject_ref(f"s{(i // 50) % 40}")] if i % 50 == 0 else [],
                    "details": {"console_read": True} if i % 3 == 0 and decision == "allowed" else {},
                    "policy_hash": "ab" * 32,
                },
                tx=tx,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    n = ap.parse_args().records
    with tempfile.TemporaryDirectory() as d:
        a = AuditLog(
            Database(f"sqlite:///{d}/gallery.sqlite3"), Path(d), lambda: START, checkpoint_every=10**9
        )
        fill(a, n)

        def python_page(f: AuditFilter) -> list[int]:  # the peer: every record read and parsed
            out = []
            for seq, text, ts in a._scan("a.record, a.ts", before=2**62):
                if f.matches(json.loads(text), ts):
                    out.append(int(seq))
                    if len(out) == 50:
                        break
            return out

        rows = []
        report = timed(lambda: transparency_report(a), repeats=3)
        rows.append(["transparency report", report, "", ""])
        filters = {
            "hide console reads": AuditFilter(hide_console_reads=True),
            "decision=denied, rule": AuditFilter(decision="denied", rule="quota", hide_console_reads=True),
            "key": AuditFilter(key="FWKEY13", hide_console_reads=True),
            "collection": AuditFilter(collection="c42"),
            "organisation + operation": AuditFilter(org="org9", operation="CompareFaces"),
            "subject (pseudonym)": AuditFilter(subject_ref=a.subject_ref("s5")),
            "time range (day 40)": AuditFilter(since=START + 40 * 86400, until=START + 41 * 86400),
            "nothing matches": AuditFilter(key="FWKEY13", decision="denied", rule="moratorium", org="org0"),
        }
        for name, f in filters.items():
            page = lambda f=f: [s for s, _ in itertools.islice(a.export(where=f, before=2**62), 50)]  # noqa: E731
            assert page() == python_page(f), name
            ours, peer = timed(page, repeats=5, warmup=1), timed(lambda f=f: python_page(f), repeats=1)
            rows.append([f"page of 50: {name}", ours, peer, f"{peer / ours:.0f}x"])
        print(f"{n} records, SQLite; medians in seconds")
        print(table(["what", "facewarden", "every record in Python", "ratio"], rows))


if __name__ == "__main__":
    main()
