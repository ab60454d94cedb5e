"""Per-key daily quotas (identification searches, comparisons), counted in the shared database.

Counting happens at decision time, before any image is decoded, inside a transaction under the
named lock "quota", so several service processes never let a key past its limit together.
"""

from __future__ import annotations

import datetime as dt

from ..db import Database
from ..errors import QuotaExceeded
from .kinds import Kind
from .principals import Principal
from .rules import Policy

MIGRATIONS = [
    """
    CREATE TABLE policy_quota_usage (
        key_id TEXT NOT NULL,
        day TEXT NOT NULL,
        quota_id TEXT NOT NULL,
        used INTEGER NOT NULL,
        PRIMARY KEY (key_id, day, quota_id)
    )
    """,
]


class Quotas:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("policy_quota", MIGRATIONS)

    def consume(
        self, policy: Policy, principal: Principal, operation: str, kind: Kind, now: float, units: int = 1
    ) -> dict[str, int]:
        """Count ``units`` uses of every quota ``operation`` (of ``kind``) falls under; raise
        QuotaExceeded if one has fewer left (a video search settles one unit per person found).

        Returns {quota id: uses today including these}. Nothing is counted when one is exceeded.
        """
        if units < 1:
            return {}
        quotas = policy.quotas_for(operation, kind)
        if not quotas:
            return {}
        day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
        used: dict[str, int] = {}
        with self.db.transaction(lock="quota") as tx:
            for q in quotas:
                n = tx.scalar(
                    "SELECT used FROM policy_quota_usage WHERE key_id = ? AND day = ? AND quota_id = ?",
                    (principal.key_id, day, q.id),
                )
                n = int(n or 0)
                if n + units > q.per_key_per_day:
                    need = "" if units == 1 else f" ({units} needed, {max(q.per_key_per_day - n, 0)} left)"
                    reset = dt.date.fromisoformat(day) + dt.timedelta(days=1)
                    raise QuotaExceeded(
                        f"Access key {principal.key_id} has used its {q.id} quota of {q.per_key_per_day} "
                        f"{operation}-type calls for {day} (UTC){need}; it resets at {reset.isoformat()}T00:00:00Z. "
                        "Retrying before then cannot succeed.",
                        rule=f"quota:{q.id}",
                    )
                used[q.id] = n
            for q in quotas:
                if used[q.id] == 0:
                    tx.execute(
                        "INSERT INTO policy_quota_usage (key_id, day, quota_id, used) VALUES (?, ?, ?, ?)",
                        (principal.key_id, day, q.id, units),
                    )
                else:
                    tx.execute(
                        "UPDATE policy_quota_usage SET used = used + ? WHERE key_id = ? AND day = ? AND quota_id = ?",
                        (units, principal.key_id, day, q.id),
                    )
                used[q.id] += units
        return used

    def usage(self, key_id: str, now: float) -> dict[str, int]:
        day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
        with self.db.read() as tx:
            rows = tx.all(
                "SELECT quota_id, used FROM policy_quota_usage WHERE key_id = ? AND day = ?", (key_id, day)
            )
        return {r[0]: int(r[1]) for r in rows}
