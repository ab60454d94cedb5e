"""Shared bench helpers: the photo set, medians and a plain table printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"


def photos(kinds: Sequence[str] = ("single", "group")) -> list[Path]:
    if not FACES.is_dir():
        raise SystemExit(f"bench photos missing: expected ../shared/faces beside the repo ({FACES})")
    out = []
    for p in sorted(FACES.rglob("*")):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
            continue
        kind = {"group": "group", "noface": "noface"}.get(p.parent.name, "single")
        if kind in kinds:
            out.append(p)
    return out


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 0) -> float:
    """Median wall time of ``repeats`` calls (after ``warmup`` untimed ones), in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [
        [f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
