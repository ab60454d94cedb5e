"""The policy file and the decision: may this principal run this operation on this collection?

:meth:`Policy.decide` looks only at the principal, the operation's name and declared kind
(:class:`~facewarden.policy.kinds.Kind`) and the collection's metadata, never at images, so the
service can decide before it decodes anything ("policy before pixels"). The rules come from a TOML
file (``default_policy.toml`` is the shipped default); rules, purposes and quotas name kinds (or
single operations), and the file's SHA-256 identifies the policy in force in every audit record.

Two things are not the file's to decide. Which kind an operation is, is declared in code with the
operation: a file cannot move an operation to another kind (a ``[classes]`` table of an older file
is accepted only where it agrees with the code, :func:`check_legacy_classes`). And the safeguards
of :mod:`facewarden.policy.builtin` (the moratorium, the surveillance rule, purposes' similarity
floors, the quotas, the cap's ceiling, the household exemption's limits) hold whatever the file
says: they are combined with the file's rules here (:func:`rules_in_force`,
:func:`quotas_in_force`, :meth:`Policy.min_similarity`), and a file that would weaken one is refused
(:class:`~facewarden.errors.PolicyWeakening`, rule ``builtin:<name>``).
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

from ..errors import InvalidInput, PolicyWeakening
from . import builtin
from .kinds import Kind
from .principals import Principal

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.toml")
#: Kinds the household rule does not restrict: the operator's administration (e.g. converting a
#: household collection), and the consent register, which reads no face.
_NOT_HOUSEHOLD = (Kind.ADMIN, Kind.CONSENT)
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
    #: Most faces one household collection may hold.
    household_max_faces: int = 100_000

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
        a legacy ``[classes]`` table be checked against the code (see :func:`check_legacy_classes`).
        A file that would weaken a built-in safeguard raises PolicyWeakening (see
        :mod:`facewarden.policy.builtin`); other mistakes raise InvalidInput."""
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
        spec = _Spec.read(data, fail, floors=BUILT_IN)
        weakening = BUILT_IN.weakened_by(spec)
        if weakening is not None:
            rule, what = weakening
            raise PolicyWeakening(
                f"Policy {source} would weaken the safeguard {rule!r} built into facewarden: {what} A policy "
                "file may add to the built-in rules and tighten them (more sectors or operations, higher "
                "floors, lower quotas and caps), never weaken them; the policy in force stays in force.",
                f"builtin:{rule}",
            )
        return cls(
            version=int(version),
            name=str(data.get("name", "")),
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            source=source,
            text=text,
            deny_rules=rules_in_force(spec.rules),
            purposes=spec.purposes,
            quotas=quotas_in_force(spec.quotas),
            max_expected_false_matches=min(spec.cap, BUILT_IN.cap),
            cross_organisation=spec.cross_organisation,
            household_purposes=tuple(p for p in spec.household_purposes if p in BUILT_IN.household_purposes),
            default_retention_days=spec.default_retention_days,
            household_max_faces=min(spec.household_max_faces, BUILT_IN.household_max_faces),
        )

    # ---- what names a rule, purpose or quota ---------------------------------------------------
    def min_similarity(self, purpose: str) -> float:
        """The purpose's similarity floor: the file's, never below the built-in one."""
        given = float(self.purposes.get(purpose, {}).get("min_similarity", 0.0))
        return max(given, BUILT_IN.floor(purpose))

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
        # (The consent register reads no face: consents may be recorded, e.g. before a conversion.)
        if collection is not None and collection.consent_mode == "household" and kind not in _NOT_HOUSEHOLD:
            denial = self._household(p, operation, collection)
            if denial is not None:
                return denial
        if (
            collection is not None
            and not self.cross_organisation
            and kind is not Kind.ADMIN
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
        purpose's own ``max_expected_false_matches``, else the ``[thresholds]`` one; never above the
        purpose's built-in ceiling."""
        own = self.purposes.get(purpose or "", {}).get("max_expected_false_matches")
        cap = float(self.max_expected_false_matches if own is None else own)
        return min(cap, BUILT_IN.cap_ceiling(purpose))

    def _household(self, p: Principal, operation: str, collection: CollectionInfo) -> Decision | None:
        """The household exemption (a natural person's own photo library, no per-face consent):
        only an organisation of sector ``individual`` may have one, and only its own
        household-purpose keys may use it (never shared, whatever ``cross_organisation`` says)."""
        cid = collection.collection_id
        purposes = "/".join(self.household_purposes) or "(none)"
        if collection.owner_org != p.org:
            return Decision.deny(
                "household",
                f"Collection {cid} is a household photo library of another organisation: only its owner's "
                f"{purposes} keys may use it, and nobody else may search, list or export it.",
            )
        if p.sector != builtin.HOUSEHOLD_SECTOR:
            return Decision.deny(
                "household",
                f"Household collections (a personal photo library, no consent record per face) are only for "
                f"organisations of sector {builtin.HOUSEHOLD_SECTOR!r}, a natural person's own photos; "
                f"{p.org} is of sector {p.sector!r}. Use a consent collection (ConsentMode 'required', each "
                "subject's consent recorded with GrantConsent); a service for many people models each of "
                f"them as an organisation of sector {builtin.HOUSEHOLD_SECTOR!r}."
                + (
                    ""
                    if operation == "CreateCollection"
                    else f" The operator can convert {cid} with `facewarden collection convert {cid} "
                    "--consent required` (it erases every face without a consent record)."
                ),
            )
        if p.purpose not in self.household_purposes:
            return Decision.deny(
                "household",
                f"Collection {cid} is a household photo library: only its owner's {purposes} keys may use it "
                f"(this key's purpose is {p.purpose}).",
            )
        return None


def matches(operation: str, kind: Kind, names: Iterable[str]) -> bool:
    """Do ``names`` (of a rule, a purpose or a quota: kinds, or operation names with shell-style
    patterns) cover ``operation`` of ``kind``?"""
    return any(n == kind.value or fnmatch.fnmatchcase(operation, n) for n in names)


def rules_in_force(file_rules: list[DenyRule]) -> list[DenyRule]:
    """The deny rules :meth:`Policy.decide` applies, in order: the one place where the file's rules
    are combined with the rules built into the code (the moratorium, the surveillance rule). The
    built-ins come first and hold whatever the file says; the file's rules (its own copies of the
    built-ins, tightened or not, and rules of its own) follow."""
    return [*BUILT_IN.rules, *file_rules]


def quotas_in_force(file_quotas: list[Quota]) -> list[Quota]:
    """The quotas that count: each built-in quota (at the file's limit where that is lower, over
    the file's operations too), then the file's other quotas."""
    by_id = {q.id: q for q in file_quotas}
    out = []
    for b in BUILT_IN.quotas:
        f = by_id.pop(b.id, None)
        if f is None:
            out.append(b)
        else:
            out.append(Quota(b.id, b.operations | f.operations, min(b.per_key_per_day, f.per_key_per_day)))
    return out + list(by_id.values())


def _covers(outer: tuple[str, ...] | None, inner: tuple[str, ...] | None) -> bool:
    """Does a sector/purpose list ``outer`` take in everything ``inner`` does (None: everyone)?"""
    if outer is None:
        return True
    return inner is not None and set(inner) <= set(outer)


def _names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


@dataclass(frozen=True)
class _Spec:
    """What a policy file says, read and checked for form (before the built-ins join it)."""

    rules: list[DenyRule]
    purposes: dict[str, dict[str, Any]]
    #: purpose -> the min_similarity the file wrote (purposes that wrote none are absent)
    written_floors: dict[str, float]
    quotas: list[Quota]
    cap: float
    cross_organisation: bool
    household_purposes: tuple[str, ...]
    household_max_faces: int
    default_retention_days: float

    @classmethod
    def read(cls, data: Mapping[str, Any], fail: Any, floors: BuiltIns | None) -> _Spec:
        """``floors``: where a purpose writes no min_similarity, its built-in floor applies."""
        purposes: dict[str, dict[str, Any]] = {}
        written: dict[str, float] = {}
        raw_purposes = data.get("purposes", {})
        if not isinstance(raw_purposes, dict):
            raise fail("[purposes] must be a table of tables.")
        for name, spec in raw_purposes.items():
            if not isinstance(spec, dict):
                raise fail(f"[purposes.{name}] must be a table.")
            floor = spec.get("min_similarity")
            if floor is None:
                floor = floors.floor(name) if floors is not None else 0
            else:
                written[name] = floor
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
        thresholds = data.get("thresholds", {})
        cap = thresholds.get("max_expected_false_matches", 0.01) if isinstance(thresholds, dict) else None
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0:
            raise fail("thresholds.max_expected_false_matches must be a number > 0.")
        coll = data.get("collections", {})
        if not isinstance(coll, dict):
            raise fail("[collections] must be a table.")
        retention = coll.get("default_retention_days", 365)
        if isinstance(retention, bool) or not isinstance(retention, (int, float)) or retention <= 0:
            raise fail("collections.default_retention_days must be a number > 0.")
        most = coll.get("household_max_faces", floors.household_max_faces if floors else 100_000)
        if isinstance(most, bool) or not isinstance(most, int) or most < 0:
            raise fail("collections.household_max_faces must be a whole number >= 0.")
        return cls(
            rules=_deny_rules(data.get("deny", []), fail),
            purposes=purposes,
            written_floors=written,
            quotas=_quotas(data.get("quotas", []), fail),
            cap=float(cap),
            cross_organisation=bool(coll.get("cross_organisation", False)),
            household_purposes=tuple(_strs(coll.get("household_purposes", []), "household_purposes", fail)),
            household_max_faces=most,
            default_retention_days=float(retention),
        )


@dataclass(frozen=True)
class BuiltIns:
    """The safeguards of :mod:`facewarden.policy.builtin`, read by the file's own parser."""

    rules: tuple[DenyRule, ...]
    floors: Mapping[str, float]
    new_purpose_floor: float
    quotas: tuple[Quota, ...]
    cap: float
    household_purposes: tuple[str, ...]
    household_max_faces: int
    #: purpose -> a ceiling below ``cap`` for that purpose's cap
    purpose_caps: Mapping[str, float]

    @classmethod
    def read(cls, data: Mapping[str, Any]) -> BuiltIns:
        def fail(msg: str) -> InvalidInput:
            return InvalidInput(f"facewarden's built-in policy: {msg}")

        spec = _Spec.read(
            {"deny": data["deny"], "quotas": data["quotas"],
             "thresholds": {"max_expected_false_matches": data["max_expected_false_matches"]},
             "collections": {"household_purposes": data["household_purposes"],
                             "household_max_faces": data["household_max_faces"]}},
            fail, None,
        )  # fmt: skip
        return cls(
            tuple(spec.rules),
            {k: float(v) for k, v in data["floors"].items()},
            float(data["new_purpose_floor"]),
            tuple(spec.quotas),
            spec.cap,
            spec.household_purposes,
            spec.household_max_faces,
            {k: min(float(v), spec.cap) for k, v in data["purpose_max_expected_false_matches"].items()},
        )

    def cap_ceiling(self, purpose: str | None) -> float:
        """The highest cap on expected false matches per search ``purpose`` may have. A purpose the
        built-ins do not know (one a policy file declares) gets the strictest purpose's ceiling, as
        it gets ``new_purpose_floor``: otherwise a file could call its door ``door_entry`` and
        leave access control's ceiling behind."""
        if purpose is not None and purpose in self.purpose_caps:
            return self.purpose_caps[purpose]
        if purpose is None or purpose in self.floors:
            return self.cap
        return min(self.purpose_caps.values(), default=self.cap)

    def describe(self) -> dict[str, Any]:
        """The built-in safeguards, for people (DescribePolicy, the transparency report, the console)."""
        return {
            "Rules": [
                {
                    "Id": r.id,
                    "Sectors": list(r.sectors) if r.sectors is not None else None,
                    "Purposes": list(r.purposes) if r.purposes is not None else None,
                    "Operations": sorted(r.operations),
                    "Exemptions": [
                        {"Name": e.name, "Sectors": list(e.sectors or ()), "Purposes": list(e.purposes or ())}
                        for e in r.exemptions
                    ],
                    "Until": None,
                    "Reason": r.reason,
                }
                for r in self.rules
            ],
            "Floors": dict(self.floors),
            "NewPurposeFloor": self.new_purpose_floor,
            "Quotas": [
                {"Id": q.id, "Operations": sorted(q.operations), "PerKeyPerDay": q.per_key_per_day}
                for q in self.quotas
            ],
            "MaxExpectedFalseMatchesCeiling": self.cap,
            "PurposeMaxExpectedFalseMatchesCeilings": dict(self.purpose_caps),
            "Household": {
                "Sector": builtin.HOUSEHOLD_SECTOR,
                "Purposes": list(self.household_purposes),
                "MaxFaces": self.household_max_faces,
            },
        }

    def floor(self, purpose: str) -> float:
        """The lowest min_similarity ``purpose`` may have."""
        return self.floors.get(purpose, self.new_purpose_floor)

    def weakened_by(self, spec: _Spec) -> tuple[str, str] | None:
        """``(built-in name, what the file does to it)`` for the first built-in safeguard the file
        would weaken, or None if it keeps (or tightens) them all."""
        file_rules = {r.id: r for r in spec.rules}
        for b in self.rules:
            f = file_rules.get(b.id)
            if f is None:
                return b.id, f"it deletes the rule {b.id!r} (keep a [[deny]] rule with id = {b.id!r})."
            if f.until is not None:
                return b.id, f"it sets `until = {f.until}` on {b.id!r}, which is indefinite."
            if not _covers(f.sectors, b.sectors):
                gone = set(b.sectors or ()) - set(f.sectors or ())
                return b.id, f"it removes sector(s) {_names(gone) or '(all)'} from {b.id!r}."
            if not _covers(f.purposes, b.purposes):
                gone = set(b.purposes or ()) - set(f.purposes or ())
                return b.id, f"it removes purpose(s) {_names(gone) or '(all)'} from {b.id!r}."
            if not b.operations <= f.operations:
                return b.id, f"it removes {_names(b.operations - f.operations)} from {b.id!r}'s operations."
            for e in f.exemptions:
                if not any(
                    _covers(x.sectors, e.sectors) and _covers(x.purposes, e.purposes) for x in b.exemptions
                ):
                    return (
                        b.id,
                        f"it adds the exemption {e.name!r} to {b.id!r}, wider than the built-in ones.",
                    )
        for name, floor in sorted(spec.written_floors.items()):
            if floor < self.floor(name):
                return "floor", (
                    f"purposes.{name}.min_similarity = {floor:g} is below the built-in floor of "
                    f"{self.floor(name):g} for {'purpose ' + name if name in self.floors else 'a new purpose'}."
                )
        file_quotas = {q.id: q for q in spec.quotas}
        for bq in self.quotas:
            fq = file_quotas.get(bq.id)
            if fq is None:
                return (
                    f"quota:{bq.id}",
                    f"it deletes the quota {bq.id!r} (keep a [[quotas]] entry with id = {bq.id!r}).",
                )
            if fq.per_key_per_day > bq.per_key_per_day:
                return f"quota:{bq.id}", (
                    f"it raises quota {bq.id!r} to {fq.per_key_per_day} a day, above the built-in "
                    f"{bq.per_key_per_day}."
                )
            if not bq.operations <= fq.operations:
                return (
                    f"quota:{bq.id}",
                    f"it removes {_names(bq.operations - fq.operations)} from quota {bq.id!r}.",
                )
        if spec.cap > self.cap:
            return "max_expected_false_matches", (
                f"thresholds.max_expected_false_matches = {spec.cap:g} is above the built-in ceiling of {self.cap:g}."
            )
        for name, p in sorted(spec.purposes.items()):
            own = p["max_expected_false_matches"]
            if own is not None and own > self.cap_ceiling(name):
                return "max_expected_false_matches", (
                    f"purposes.{name}.max_expected_false_matches = {own:g} is above the built-in ceiling of "
                    f"{self.cap_ceiling(name):g}"
                    + (f" for purpose {name}." if name in self.purpose_caps else ".")
                )
        extra = set(spec.household_purposes) - set(self.household_purposes)
        if extra:
            return "household", (
                f"collections.household_purposes adds {_names(extra)}; household collections (no per-face "
                f"consent) serve at most {_names(self.household_purposes)}."
            )
        if spec.household_max_faces > self.household_max_faces:
            return "household", (
                f"collections.household_max_faces = {spec.household_max_faces} is above the built-in "
                f"{self.household_max_faces}."
            )
        return None


def _deny_rules(raw: Any, fail: Any) -> list[DenyRule]:
    if not isinstance(raw, list):
        raise fail("[[deny]] must be an array of tables.")
    rules: list[DenyRule] = []
    seen: set[str] = set()
    for i, r in enumerate(raw):
        rid = r.get("id") if isinstance(r, dict) else None
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
        raw_exemptions = r.get("exemptions", [])
        if not isinstance(raw_exemptions, list) or not all(isinstance(e, dict) for e in raw_exemptions):
            raise fail(f"deny.{rid}.exemptions must be an array of tables.")
        exemptions = tuple(
            Exemption(
                name=str(e.get("name") or f"exemption{j + 1}"),
                sectors=_opt(e.get("sectors"), f"deny.{rid}.exemptions.sectors", fail),
                purposes=_opt(e.get("purposes"), f"deny.{rid}.exemptions.purposes", fail),
            )
            for j, e in enumerate(raw_exemptions)
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
    return rules


def _quotas(raw: Any, fail: Any) -> list[Quota]:
    if not isinstance(raw, list):
        raise fail("[[quotas]] must be an array of tables.")
    quotas = []
    for i, q in enumerate(raw):
        limit = q.get("per_key_per_day") if isinstance(q, dict) else None
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise fail(f"[[quotas]] #{i + 1}: per_key_per_day must be a whole number >= 0.")
        quotas.append(
            Quota(
                id=str(q.get("id") or f"quota{i + 1}"),
                operations=frozenset(_strs(q.get("operations"), "quotas.operations", fail)),
                per_key_per_day=limit,
            )
        )
    return quotas


#: Patterns of the [classes] table older installations were given, which code has since narrowed:
#: ``evaluate = ["Evaluate*"]`` (the evaluations that compare faces are now of kind compare or
#: identify). Such a pattern only no longer covers them; a file naming one of them is refused.
_LEGACY_PATTERNS = frozenset({("evaluate", "Evaluate*")})


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
            named = [p for p in patterns if (name, p) not in _LEGACY_PATTERNS]
            if kind.value != name and any(fnmatch.fnmatchcase(operation, p) for p in named):
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


BUILT_IN = BuiltIns.read(builtin.BUILT_IN)
