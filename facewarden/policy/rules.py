"""The policy file and the decision: may this principal run this operation on this collection?

:meth:`Policy.decide` looks only at the principal, the operation's name and declared kind
(:class:`~facewarden.policy.kinds.Kind`) and the collection's metadata, never at images, so the
service can decide before it decodes anything ("policy before pixels"). The rules come from a TOML
file (``default_policy.toml`` is the shipped default, the moratorium); rules, purposes and quotas
name kinds (or single operations), and the file's SHA-256 identifies the policy in force in every
audit record. Which kind an operation is, is declared in code with the operation: a file cannot
move an operation to another kind (a ``[classes]`` table of an older file is accepted only where it
agrees with the code, :func:`check_legacy_classes`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .kinds import Kind
from .principals import Principal

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.toml")
SUPPORTED_VERSIONS = (1,)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule_id: str
    reason: str

    @classmethod
    def allow(cls, rule_id: str = "allow", reason: str = "allowed by policy") -> Decision:
        return cls(True, rule_id, reason)

    @classmethod
    def deny(cls, rule_id: str, reason: str) -> Decision:
        return cls(False, rule_id, reason)


@dataclass(frozen=True)
class CollectionInfo:
    """What policy needs to know about a collection (from the gallery)."""

    collection_id: str
    owner_org: str | None = None
    consent_mode: str = "required"
    retention_days: float | None = None


@dataclass(frozen=True)
class Exemption:
    name: str
    sectors: tuple[str, ...] | None
    purposes: tuple[str, ...] | None

    def matches(self, p: Principal) -> bool:
        return (self.sectors is None or p.sector in self.sectors) and (
            self.purposes is None or p.purpose in self.purposes
        )


@dataclass(frozen=True)
class DenyRule:
    id: str
    reason: str
    operations: frozenset[str]
    sectors: tuple[str, ...] | None = None
    purposes: tuple[str, ...] | None = None
    until: dt.date | None = None
    exemptions: tuple[Exemption, ...] = ()


@dataclass(frozen=True)
class Quota:
    id: str
    operations: frozenset[str]
    per_key_per_day: int


@dataclass
class Policy:
    """A parsed, validated policy file."""

    version: int
    name: str
    sha256: str
    source: str
    text: str
    deny_rules: list[DenyRule]
    purposes: dict[str, dict[str, Any]]
    quotas: list[Quota]
    max_expected_false_matches: float
    cross_organisation: bool
    household_purposes: tuple[str, ...]
    default_retention_days: float

    # ---- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, kinds: Mapping[str, Kind] | None = None) -> Policy:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"Cannot read the policy file {p}: {exc.strerror or exc}.") from None
        return cls.parse(text, source=str(p), kinds=kinds)

    @classmethod
    def default(cls) -> Policy:
        return cls.load(DEFAULT_POLICY_PATH)

    @classmethod
    def parse(cls, text: str, source: str = "<string>", kinds: Mapping[str, Kind] | None = None) -> Policy:
        """Parse and validate a policy file. ``kinds`` (operation name -> its declared kind) lets
        a legacy ``[classes]`` table be checked against the code (see :func:`check_legacy_classes`)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"The policy file {source} is not valid TOML: {exc}.") from None

        def fail(msg: str) -> InvalidInput:
            return InvalidInput(f"Policy {source}: {msg}")

        version = data.get("version")
        if version not in SUPPORTED_VERSIONS:
            raise fail(f"`version` must be one of {SUPPORTED_VERSIONS}, not {version!r}.")
        classes_raw = data.get("classes", {})
        if not isinstance(classes_raw, dict):
            raise fail("[classes] must be a table of lists of operation names.")
        check_legacy_classes(
            {k: tuple(_strs(v, f"classes.{k}", fail)) for k, v in classes_raw.items()}, kinds or {}, fail
        )

        rules: list[DenyRule] = []
        seen: set[str] = set()
        for i, r in enumerate(data.get("deny", [])):
            rid = r.get("id")
            if not isinstance(rid, str) or not rid or rid in seen:
                raise fail(f"[[deny]] #{i + 1} needs a unique string `id`.")
            seen.add(rid)
            ops = _strs(r.get("operations"), f"deny.{rid}.operations", fail)
            until = r.get("until")
            if isinstance(until, str) and until:
                try:
                    until = dt.date.fromisoformat(until)
                except ValueError:
                    raise fail(f"deny.{rid}.until must be a date (YYYY-MM-DD).") from None
            elif isinstance(until, dt.datetime):
                until = until.date()
            elif until in (None, ""):
                until = None
            elif not isinstance(until, dt.date):
                raise fail(f"deny.{rid}.until must be a date (YYYY-MM-DD).")
            exemptions = tuple(
                Exemption(
                    name=str(e.get("name") or f"exemption{j + 1}"),
                    sectors=_opt(e.get("sectors"), f"deny.{rid}.exemptions.sectors", fail),
                    purposes=_opt(e.get("purposes"), f"deny.{rid}.exemptions.purposes", fail),
                )
                for j, e in enumerate(r.get("exemptions", []))
            )
            rules.append(
                DenyRule(
                    id=rid,
                    reason=" ".join(str(r.get("reason") or f"denied by policy rule {rid}").split()),
                    operations=frozenset(ops),
                    sectors=_opt(r.get("sectors"), f"deny.{rid}.sectors", fail),
                    purposes=_opt(r.get("purposes"), f"deny.{rid}.purposes", fail),
                    until=until,
                    exemptions=exemptions,
                )
            )

        purposes: dict[str, dict[str, Any]] = {}
        for name, spec in data.get("purposes", {}).items():
            if not isinstance(spec, dict):
                raise fail(f"[purposes.{name}] must be a table.")
            floor = spec.get("min_similarity", 0)
            if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 100:
                raise fail(f"purposes.{name}.min_similarity must be a number from 0 to 100.")
            purpose_cap = spec.get("max_expected_false_matches")
            if purpose_cap is not None and (
                isinstance(purpose_cap, bool) or not isinstance(purpose_cap, (int, float)) or purpose_cap <= 0
            ):
                raise fail(f"purposes.{name}.max_expected_false_matches must be a number > 0.")
            purposes[name] = {
                "operations": tuple(_strs(spec.get("operations", []), f"purposes.{name}.operations", fail)),
                "min_similarity": float(floor),
                "max_expected_false_matches": None if purpose_cap is None else float(purpose_cap),
                "description": str(spec.get("description", "")),
            }

        quotas = []
        for i, q in enumerate(data.get("quotas", [])):
            limit = q.get("per_key_per_day")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise fail(f"[[quotas]] #{i + 1}: per_key_per_day must be a whole number >= 0.")
            quotas.append(
                Quota(
                    id=str(q.get("id") or f"quota{i + 1}"),
                    operations=frozenset(_strs(q.get("operations"), "quotas.operations", fail)),
                    per_key_per_day=limit,
                )
            )
        cap = data.get("thresholds", {}).get("max_expected_false_matches", 0.01)
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0:
            raise fail("thresholds.max_expected_false_matches must be a number > 0.")
        coll = data.get("collections", {})
        retention = coll.get("default_retention_days", 365)
        if isinstance(retention, bool) or not isinstance(retention, (int, float)) or retention <= 0:
            raise fail("collections.default_retention_days must be a number > 0.")
        return cls(
            version=int(version),
            name=str(data.get("name", "")),
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            source=source,
            text=text,
            deny_rules=rules_in_force(rules),
            purposes=purposes,
            quotas=quotas,
            max_expected_false_matches=float(cap),
            cross_organisation=bool(coll.get("cross_organisation", False)),
            household_purposes=tuple(_strs(coll.get("household_purposes", []), "household_purposes", fail)),
            default_retention_days=float(retention),
        )

    # ---- what names a rule, purpose or quota ---------------------------------------------------
    def min_similarity(self, purpose: str) -> float:
        return float(self.purposes.get(purpose, {}).get("min_similarity", 0.0))

    def quotas_for(self, operation: str, kind: Kind) -> list[Quota]:
        return [q for q in self.quotas if matches(operation, kind, q.operations)]

    # ---- the decision --------------------------------------------------------------------------
    def decide(
        self,
        principal: Principal | None,
        operation: str,
        kind: Kind | None,
        collection: CollectionInfo | None = None,
        *,
        collection_id: str | None = None,
        now: float,
    ) -> Decision:
        """Allow or deny ``operation`` of the declared ``kind``, with the rule id and a reason a
        person can act on. Looks at no image. ``kind`` None (nothing declared it) is denied."""
        p = principal
        if p is None:
            return Decision.deny(
                "principal",
                "Every request needs a principal (an organisation's access key): sign the request, or "
                "use the owner principal from `facewarden init` for the CLI and Python API.",
            )
        if p.revoked_at is not None:
            return Decision.deny(
                "key_revoked", f"Access key {p.key_id} was revoked; ask the operator for a new key."
            )
        if p.expires_at is not None and now >= p.expires_at:
            return Decision.deny(
                "key_expired",
                f"Access key {p.key_id} expired at {_iso(p.expires_at)}; ask the operator for a new key.",
            )
        if kind is None:
            return Decision.deny(
                "unclassified",
                f"Operation {operation} declares no kind, so nobody may call it: an operation's kind "
                "(detect, compare, enrol, identify, ...) is declared in code, with the operation.",
            )
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        for rule in self.deny_rules:
            if rule.until is not None and today >= rule.until:
                continue
            if not matches(operation, kind, rule.operations):
                continue
            if rule.sectors is not None and p.sector not in rule.sectors:
                continue
            if rule.purposes is not None and p.purpose not in rule.purposes:
                continue
            if any(e.matches(p) for e in rule.exemptions):
                continue
            who = f"sector {p.sector}" if rule.sectors is not None else f"purpose {p.purpose}"
            return Decision.deny(rule.id, f"{operation} denied to {who}. {rule.reason}")
        spec = self.purposes.get(p.purpose)
        if spec is None:
            return Decision.deny(
                "purpose",
                f"Purpose {p.purpose!r} of key {p.key_id} is not one the policy knows, so it may do nothing. "
                f"Known purposes: {', '.join(sorted(self.purposes))}.",
            )
        if not matches(operation, kind, spec["operations"]):
            return Decision.deny(
                "purpose",
                f"{operation} is not among the operations allowed for purpose {p.purpose} "
                f"({', '.join(spec['operations'])}); use a key declared for a purpose that needs it.",
            )
        if kind is Kind.ADMIN and not p.owner:
            return Decision.deny(
                "admin_owner",
                f"{operation} is an administrative operation reserved to the installation's owner organization.",
            )
        cid = collection.collection_id if collection is not None else collection_id
        if cid is not None and p.collections is not None and cid not in p.collections:
            return Decision.deny(
                "collection_scope",
                f"Access key {p.key_id} is limited to collections {', '.join(p.collections) or '(none)'}; "
                f"it may not use collection {cid}.",
            )
        if (
            collection is not None
            and collection.consent_mode == "household"
            and (collection.owner_org != p.org or p.purpose not in self.household_purposes)
        ):
            return Decision.deny(
                "household",
                f"Collection {collection.collection_id} is a household photo library: only its owner's "
                f"{'/'.join(self.household_purposes)} keys may use it, and nobody else may search or list it.",
            )
        if (
            collection is not None
            and not self.cross_organisation
            and collection.owner_org is not None
            and collection.owner_org != p.org
        ):
            return Decision.deny(
                "collection_owner",
                f"Collection {collection.collection_id} belongs to another organization; a key may only use "
                "its own organization's collections.",
            )
        return Decision.allow("purpose", f"{operation} allowed for purpose {p.purpose} (sector {p.sector})")

    def cap_for(self, purpose: str | None) -> float:
        """The most false matches a 1:N search for ``purpose`` may be expected to make: the
        purpose's own ``max_expected_false_matches``, else the ``[thresholds]`` one."""
        own = self.purposes.get(purpose or "", {}).get("max_expected_false_matches")
        return float(self.max_expected_false_matches if own is None else own)


def matches(operation: str, kind: Kind, names: Iterable[str]) -> bool:
    """Do ``names`` (of a rule, a purpose or a quota: kinds, or operation names with shell-style
    patterns) cover ``operation`` of ``kind``?"""
    return any(n == kind.value or fnmatch.fnmatchcase(operation, n) for n in names)


def rules_in_force(file_rules: list[DenyRule]) -> list[DenyRule]:
    """The deny rules :meth:`Policy.decide` applies, in order: the one place where the file's rules
    are combined with rules that hold whatever the file says (none yet; a built-in moratorium
    that files may tighten but not weaken belongs here)."""
    return list(file_rules)


def check_legacy_classes(
    classes: Mapping[str, tuple[str, ...]], kinds: Mapping[str, Kind], fail: Any
) -> None:
    """Accept a ``[classes]`` table (policy files of older installations carry one) only where it
    agrees with the kinds declared in code: it may not put an operation in another kind, nor name
    a class that is no kind. ``kinds``: operation name -> declared kind."""
    known = {k.value for k in Kind}
    for name, patterns in classes.items():
        if name not in known:
            raise fail(
                f"[classes] names {name!r}, which is not a kind of operation. Operations declare their "
                f"kind in code ({', '.join(sorted(known))}); delete the [classes] table and name kinds "
                "in rules and purposes."
            )
        for operation, kind in sorted(kinds.items()):
            if kind.value != name and any(fnmatch.fnmatchcase(operation, p) for p in patterns):
                raise fail(
                    f"[classes] puts {operation} in {name!r}, but {operation} is declared as "
                    f"{kind.value!r} in code; a policy file cannot reclassify an operation. Delete the "
                    "[classes] table (rules and purposes name kinds)."
                )


def _strs(value: Any, where: str, fail: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(f"{where} must be a list of names.")
    return list(value)


def _opt(value: Any, where: str, fail: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(_strs(value, where, fail))


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
