"""The service core: the one path every operation takes: policy decision, engine, gallery, audit record, in that order.

Every adapter (the Rekognition wire protocol, the native REST API, the CLI, the Python API) calls
:meth:`Service.call` with a Rekognition-shaped request dict and the caller's principal, and gets a
Rekognition-shaped response dict back. :meth:`Service.call` decides first (a denied request never
decodes an image), then runs the operation, then writes one audit record, for denials and
failures too. Nobody bypasses policy: a call without a principal is denied (the CLI and the
Python API act as :meth:`Service.owner_principal`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..media import images
from ..audit import AuditLog
from ..config import Settings
from ..db import Database, Tx
from ..engine import DetectedFace, Engine
from ..engine.calibration import fmr_for_similarity
from ..errors import (
    AccessDenied,
    FacewardenError,
    InvalidInput,
    InvalidS3Object,
    QuotaExceeded,
    ResourceNotFound,
    UnrecognizedClient,
    UnsupportedOperation,
)
from ..policy import consent as consent_mod
from ..policy.consent import Consents
from ..policy.principals import Principal, Principals
from ..policy.quota import Quotas
from ..policy.rules import DEFAULT_POLICY_PATH, CollectionInfo, Decision, Policy

log = logging.getLogger("facewarden.service")

#: How often (seconds) a service process sweeps retention and expired consents, lazily, on a call.
SWEEP_INTERVAL_S = 3600.0


@dataclass
class Context:
    """One call in flight: who asks, what, and what the audit record will say about it."""

    operation: str
    principal: Any
    request: dict[str, Any]
    collection_id: str | None = None
    #: Filled by the operation for the audit record (never images or templates).
    counts: dict[str, int] = field(default_factory=dict)
    matched_face_ids: list[str] = field(default_factory=list)
    applied_threshold: dict[str, Any] | None = None
    #: Data subjects (ExternalImageId / UserId) the call is about; the audit log keeps pseudonyms.
    subjects: list[str] = field(default_factory=list)
    #: Extra, non-biometric facts for the audit record.
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    decision: Decision | None = None
    #: Set once the call's audit record is written (by the pipeline or by :meth:`Service.audit_now`).
    audit_record: dict[str, Any] | None = None


Operation = Callable[["Service", Context], dict[str, Any]]
OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    """Register a service method as the Rekognition operation ``name``."""

    def deco(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return deco


class Service:
    """The face recognition service: one per process, shared by every adapter and thread."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] | None = None,
        audit_checkpoint_every: int = 100,
        sweep_on_start: bool = True,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock or time.time
        self.engine = Engine(self.settings)
        self.db = Database(self.settings.resolved_database_url)
        self._lock = threading.RLock()
        # policy: who (principals), what (the policy file), how much (quotas), consent
        self.principals = Principals(self.db, self.settings.data_dir, self.clock)
        self.quotas = Quotas(self.db)
        self.consents = Consents(self.db, self.clock)
        self.audit = AuditLog(
            self.db, self.settings.data_dir, self.clock, checkpoint_every=audit_checkpoint_every
        )
        self.policy_path = self._policy_path()
        self.policy = Policy.load(self.policy_path)
        self._policy_stat = _stat(self.policy_path)
        self._record_policy_if_changed(self.policy, "startup")
        self._next_sweep = self.clock() + SWEEP_INTERVAL_S
        self._closed = False
        if sweep_on_start:
            try:
                self.sweep()
            except Exception:
                log.exception("retention sweep at start-up failed")

    def close(self) -> None:
        """Sign a final audit checkpoint, then close the store and the database."""
        if self._closed:
            return
        self._closed = True
        try:
            self.audit.checkpoint()
        except Exception:
            log.exception("could not write the closing audit checkpoint")
        if self.__dict__.get("gallery_store") is not None:
            try:
                self.__dict__["gallery_store"].close()
            except Exception:
                log.warning("could not close the gallery store", exc_info=True)
        self.db.close()

    # ---- the gallery store (opened on first use) ---------------------------------------------
    @property
    def store(self) -> Any:
        """The gallery store, opened on first use."""
        store = self.__dict__.get("gallery_store")
        if store is None:
            with self._lock:
                store = self.__dict__.get("gallery_store")
                if store is None:
                    from ..gallery import open_store

                    store = open_store(self.db, self.settings)
                    self.__dict__["gallery_store"] = store
        if getattr(store, "clock", None) is time.time and self.clock is not time.time:
            store.clock = self.clock  # one clock for indexing times, retention and consent expiry
        return store

    @store.setter
    def store(self, value: Any) -> None:
        self.__dict__["gallery_store"] = value

    def collection_info(self, collection_id: str | None, tx: Tx | None = None) -> CollectionInfo | None:
        """What policy needs to know about a collection, or None if it does not exist."""
        if not collection_id or not isinstance(collection_id, str):
            return None
        try:
            col = (
                self.store.get_collection(collection_id, tx)
                if tx is not None
                else self.store.get_collection(collection_id)
            )
        except ResourceNotFound:
            return None
        except ImportError:  # pragma: no cover - no gallery in this build
            return None
        return CollectionInfo(
            collection_id=col.collection_id,
            owner_org=col.owner_org,
            consent_mode=col.consent_mode,
            retention_days=col.retention_days,
        )

    # ---- principals --------------------------------------------------------------------------
    def init_owner(
        self, org: str, sector: str, *, purpose: str = "administration", description: str = ""
    ) -> tuple[Principal, str]:
        """Create the owner organisation (its sector declared, not assumed) and its first key.

        Returns the owner principal and its secret (shown once). The owner is bound by policy
        like everyone else; only administrative operations are reserved to it.
        """
        self.principals.create_org(org, sector, owner=True, description=description)
        principal, secret = self.principals.create_key(org, purpose, description="owner key created by init")
        self.audit_system("Init", principal=principal, details={"sector": sector, "purpose": purpose})
        return principal, secret

    def owner_principal(self) -> Principal:
        """The principal the CLI and the Python API act as (the owner's key from ``init``)."""
        p = self.principals.owner_key()
        if p is None:
            raise ResourceNotFound(
                "This installation has no owner yet: run `facewarden init --org NAME --sector SECTOR` "
                "(the sector is declared, e.g. commercial, research, law_enforcement)."
            )
        return p

    def principal_for_key(self, access_key_id: str) -> Principal | None:
        """The principal of an access key, or None if the key is unknown (HTTP authentication)."""
        try:
            return self.principals.principal_for_key(access_key_id)
        except UnrecognizedClient:
            return None

    def lookup_secret(self, access_key_id: str) -> tuple[Principal, str]:
        """(principal, secret) of an access key for SigV4 verification; UnrecognizedClient if unknown."""
        return self.principals.lookup_secret(access_key_id)

    def key_secret(self, access_key_id: str) -> str | None:
        """The secret of an access key, or None if unknown (revoked keys still authenticate: policy
        then denies them, with rule ``key_revoked``, in the audit log)."""
        try:
            return self.principals.lookup_secret(access_key_id)[1]
        except UnrecognizedClient:
            return None

    def record_auth_failure(
        self,
        *,
        access_key_id: str | None,
        operation: str | None,
        error_code: str,
        reason: str,
        adapter: str,
        remote: str | None = None,
    ) -> None:
        """Audit a request refused before it reached policy (bad signature, unknown key, ...)."""
        p = self.principal_for_key(access_key_id) if access_key_id else None
        self.audit.append(
            {
                "org": p.org if p else None,
                "sector": p.sector if p else None,
                "key": access_key_id,
                "purpose": p.purpose if p else None,
                "operation": operation or "(unknown)",
                "decision": "denied",
                "rule": "authentication",
                "reason": reason[:500],
                "details": {"error": error_code, "adapter": adapter, "remote": remote},
                "policy_hash": self.policy.sha256,
            }
        )

    # ---- policy ------------------------------------------------------------------------------
    def _policy_path(self) -> Path:
        if self.settings.policy_file:
            path = Path(self.settings.policy_file).expanduser()
            if not path.exists():
                raise InvalidInput(f"The policy file {path} (FACEWARDEN_POLICY_FILE) does not exist.")
            return path
        path = self.settings.data_dir / "policy.toml"
        if not path.exists():
            tmp = path.with_name(f".policy.toml.{os.getpid()}.tmp")
            shutil.copyfile(DEFAULT_POLICY_PATH, tmp)
            try:
                os.link(tmp, path)  # atomic: another process may have copied it first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return path

    def _record_policy_if_changed(self, policy: Policy, why: str) -> bool:
        """Append a PolicyChanged record if ``policy`` differs from the last one recorded."""
        with self.db.transaction(lock="audit") as tx:
            last = tx.scalar(
                "SELECT record FROM audit_log WHERE operation = 'PolicyChanged' ORDER BY seq DESC LIMIT 1"
            )

            if last and json.loads(last).get("policy_hash") == policy.sha256:
                return False
            self.audit.append(
                {
                    "operation": "PolicyChanged",
                    "decision": "recorded",
                    "rule": "policy",
                    "reason": f"policy in force ({why})",
                    "details": {"version": policy.version, "name": policy.name, "source": policy.source},
                    "policy_hash": policy.sha256,
                },
                tx=tx,
            )
        return True

    def reload_policy(self, why: str = "reload") -> Policy:
        """Re-read the policy file; record its hash in the audit log if it changed."""
        with self._lock:
            policy = Policy.load(self.policy_path)
            self.policy = policy
            self._policy_stat = _stat(self.policy_path)
        self._record_policy_if_changed(policy, why)
        return policy

    def apply_policy(self, text: str, principal: Principal | None = None) -> Policy:
        """Validate ``text``, make it the policy file in force and record its hash."""
        Policy.parse(text, source=str(self.policy_path))  # validate before anything is written
        tmp = self.policy_path.with_name(f".{self.policy_path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.policy_path)
        return self.reload_policy("apply" + (f" by {principal.org}/{principal.key_id}" if principal else ""))

    def _maybe_reload_policy(self) -> None:
        st = _stat(self.policy_path)
        if st != self._policy_stat:
            try:
                self.reload_policy("file changed")
            except FacewardenError:
                log.exception("the changed policy file is invalid; keeping the policy in force")
                self._policy_stat = st

    def decide(
        self,
        principal: Principal | None,
        operation_name: str,
        collection_id: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> Decision:
        """The policy decision for a call, before anything is decoded (also usable on its own)."""
        info = self._collection_for(principal, operation_name, collection_id, request or {})
        return self.policy.decide(
            principal, operation_name, info, collection_id=collection_id, now=self.clock()
        )

    def _collection_for(
        self, principal: Principal | None, operation_name: str, collection_id: Any, request: dict[str, Any]
    ) -> CollectionInfo | None:
        if not isinstance(collection_id, str) or not collection_id:
            return None
        if operation_name == "CreateCollection":
            # Not there yet: the collection it would become (its owner is the caller).
            mode = request.get("ConsentMode") or "required"
            return CollectionInfo(collection_id, principal.org if principal else None, str(mode).lower())
        return self.collection_info(collection_id)

    def visible_collection(self, ctx: Context, collection: Any) -> bool:
        """May the caller see this collection (e.g. in ListCollections)? Household collections of
        others, other organisations' and out-of-scope collections are not listed. ``collection`` is
        a collection id or a gallery Collection (which saves a lookup)."""
        if isinstance(collection, str):
            info = self.collection_info(collection)
            cid = collection
        else:
            cid = collection.collection_id
            info = CollectionInfo(
                cid, collection.owner_org, collection.consent_mode, collection.retention_days
            )
        d = self.policy.decide(ctx.principal, ctx.operation, info, collection_id=cid, now=self.clock())
        return d.allowed

    def effective_threshold(self, ctx: Context, requested: float | None, gallery_size: int) -> dict[str, Any]:
        """The similarity threshold a match must reach: the highest of the requested threshold,
        the purpose's floor and the threshold the gallery size requires (N x FMR <= cap).

        Sets ``ctx.applied_threshold`` and returns it: {"Similarity", "Source" ("requested" |
        "floor" | "gallery_size"), "FalseMatchRate", "ExpectedFalseMatches", "GallerySize"}.
        """
        req = float(self.settings.match_threshold if requested is None else requested)
        purpose = getattr(ctx.principal, "purpose", None)
        floor = self.policy.min_similarity(purpose) if purpose else 0.0
        n = max(0, int(gallery_size))
        by_gallery = self.policy.similarity_for_gallery(n)
        similarity, source = req, "requested"
        for value, name in ((floor, "floor"), (by_gallery, "gallery_size")):
            if value > similarity + 1e-9:
                similarity, source = value, name
        fmr = fmr_for_similarity(similarity)
        applied = {
            "Similarity": round(similarity, 4),
            "Source": source,
            "FalseMatchRate": fmr,
            "ExpectedFalseMatches": n * fmr,
            "GallerySize": n,
            "RequestedSimilarity": req,
            "PurposeFloor": floor,
            "MaxExpectedFalseMatches": self.policy.max_expected_false_matches,
            # False when even similarity 100 (the finest calibrated point) cannot keep N x FMR under
            # the cap: the gallery is too large for the cap; the response says so.
            "CapMet": n * fmr <= self.policy.max_expected_false_matches * (1 + 1e-9),
        }
        ctx.applied_threshold = applied
        return applied

    # ---- the one path ------------------------------------------------------------------------
    def call(self, operation_name: str, request: dict[str, Any], principal: Any = None) -> dict[str, Any]:
        """Run one operation: decide (before decoding anything), run, audit once. Raises
        AccessDenied (rule + reason) or QuotaExceeded when policy refuses, after auditing it."""
        fn = OPERATIONS.get(operation_name)
        if fn is None:
            raise UnsupportedOperation(
                f"facewarden does not offer {operation_name}. It offers: {', '.join(sorted(OPERATIONS))}."
            )
        if not isinstance(request, dict):
            raise InvalidInput("The request must be a JSON object.")
        if principal is not None and not isinstance(principal, Principal):
            raise InvalidInput("principal must be a facewarden Principal (see Service.owner_principal).")
        self._maybe_reload_policy()
        self._maybe_sweep()
        ctx = Context(
            operation_name, principal, request, collection_id=_str_or_none(request.get("CollectionId"))
        )
        decision = self._decide_or_deny(ctx)
        try:
            result = fn(self, ctx)
        except AccessDenied as exc:  # e.g. ConsentRequired, raised before anything was computed
            if ctx.audit_record is None:
                self._audit(ctx, "denied", exc.rule, exc.reason)
            raise
        except FacewardenError as exc:
            if ctx.audit_record is None:
                self._audit(ctx, "failed", decision.rule_id, f"{exc.aws_code} ({type(exc).__name__})")
            raise
        except Exception as exc:
            if ctx.audit_record is None:
                self._audit(ctx, "failed", decision.rule_id, f"InternalServerError ({type(exc).__name__})")
            raise
        if ctx.audit_record is None:
            self._audit(ctx, "allowed", decision.rule_id, decision.reason)
        return result

    def _decide_or_deny(self, ctx: Context, *, quota: bool = True) -> Decision:
        """The policy half of the path: decide, consume quota; a refusal is audited and raised."""
        now = self.clock()
        policy = self.policy
        try:
            info = self._collection_for(ctx.principal, ctx.operation, ctx.collection_id, ctx.request)
        except FacewardenError:
            info = None
        decision = policy.decide(ctx.principal, ctx.operation, info, collection_id=ctx.collection_id, now=now)
        ctx.decision = decision
        if not decision.allowed:
            self._audit(ctx, "denied", decision.rule_id, decision.reason)
            raise AccessDenied(decision.reason, decision.rule_id)
        if not quota:
            return decision
        try:
            used = self.quotas.consume(policy, ctx.principal, ctx.operation, now)
        except QuotaExceeded as exc:
            self._audit(ctx, "denied", exc.rule, exc.reason)
            raise
        if used:
            ctx.details["quota_used"] = used
        return decision

    def authorize(
        self,
        principal: Any,
        operation_name: str,
        collection_id: str | None = None,
        *,
        audit_allowed: bool = True,
    ) -> None:
        """Decide ``operation_name`` before work that runs outside :meth:`call` (bulk indexing in
        worker processes, evaluations) computes any template. A refusal is audited and raised; an
        allowed decision is audited too unless the work's own calls will be (they also count
        against quotas; this check does not)."""
        if principal is not None and not isinstance(principal, Principal):
            raise InvalidInput("principal must be a facewarden Principal (see Service.owner_principal).")
        self._maybe_reload_policy()
        ctx = Context(operation_name, principal, {"CollectionId": collection_id}, collection_id=collection_id)
        decision = self._decide_or_deny(ctx, quota=False)
        if audit_allowed:
            self._audit(ctx, "allowed", decision.rule_id, decision.reason)

    # ---- audit -------------------------------------------------------------------------------
    def _entry(self, ctx: Context, decision: str, rule: str, reason: str) -> dict[str, Any]:
        p = ctx.principal
        return {
            "org": getattr(p, "org", None),
            "sector": getattr(p, "sector", None),
            "key": getattr(p, "key_id", None),
            "purpose": getattr(p, "purpose", None),
            "operation": ctx.operation,
            "collection": ctx.collection_id,
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "counts": {k: int(v) for k, v in ctx.counts.items()},
            "matched_face_ids": [str(f) for f in ctx.matched_face_ids],
            "applied_threshold": ctx.applied_threshold,
            "subjects": [self.audit.subject_ref(s) for s in ctx.subjects],
            "details": ctx.details,
            "policy_hash": self.policy.sha256,
        }

    def _audit(
        self, ctx: Context, decision: str, rule: str, reason: str, tx: Tx | None = None
    ) -> dict[str, Any]:
        ctx.audit_record = self.audit.append(self._entry(ctx, decision, rule, reason), tx=tx)
        return ctx.audit_record

    def audit_now(self, ctx: Context, tx: Tx) -> dict[str, Any]:
        """Write the call's "allowed" audit record inside the operation's own transaction (so that,
        e.g., an erasure and its record commit together); the pipeline then writes no other."""
        d = ctx.decision or Decision.allow()
        return self._audit(ctx, "allowed", d.rule_id, d.reason, tx=tx)

    def audit_system(
        self,
        operation_name: str,
        *,
        counts: dict[str, int] | None = None,
        subjects: list[str] | None = None,
        details: dict[str, Any] | None = None,
        org: str | None = None,
        principal: Principal | None = None,
        collection: str | None = None,
        tx: Tx | None = None,
    ) -> dict[str, Any]:
        """An audit record of something the service did by itself (sweeps, expiry, init)."""
        return self.audit.append(
            {
                "org": principal.org if principal else org,
                "sector": principal.sector if principal else None,
                "key": principal.key_id if principal else None,
                "purpose": principal.purpose if principal else None,
                "operation": operation_name,
                "collection": collection,
                "decision": "recorded",
                "rule": "system",
                "reason": f"{operation_name} by the service",
                "counts": counts or {},
                "subjects": [self.audit.subject_ref(s) for s in (subjects or [])],
                "details": details or {},
                "policy_hash": self.policy.sha256,
            },
            tx=tx,
        )

    # ---- retention and consent expiry --------------------------------------------------------
    def _maybe_sweep(self) -> None:
        if self.clock() < self._next_sweep:
            return
        try:
            self.sweep()
        except Exception:
            log.exception("periodic retention sweep failed")

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Purge templates past their collection's retention period and erase what expired
        consents covered. Runs at start-up and every hour (lazily, on a call)."""
        now = self.clock() if now is None else float(now)
        self._next_sweep = now + SWEEP_INTERVAL_S
        try:
            store = self.store
        except ImportError:  # pragma: no cover - no gallery in this build
            return {"faces_purged": 0, "consents_expired": 0, "faces_erased": 0}
        purged = 0
        after = None
        while True:
            page = store.list_collections(after=after, limit=500)
            if not page:
                break
            for col in page:
                days = col.retention_days or self.policy.default_retention_days
                cutoff = now - float(days) * 86400.0
                with self.db.transaction(lock=f"retention:{col.collection_id}") as tx:
                    removed = store.purge_before(col.collection_id, cutoff, tx=tx)
                    if removed:
                        self.audit_system(
                            "RetentionSweep",
                            counts={"faces_erased": len(removed)},
                            details={"retention_days": days},
                            org=col.owner_org,
                            collection=col.collection_id,
                            tx=tx,
                        )
                if removed:
                    purged += len(removed)
                    try:
                        store.sync_index(col.collection_id)
                    except Exception:
                        log.warning("could not sync the index of %s", col.collection_id, exc_info=True)
            after = page[-1].collection_id
        expired = consent_mod.expire(self, now)
        return {"faces_purged": purged, **expired}

    # ---- shared steps ------------------------------------------------------------------------
    def decode_image(self, image: Any, field_name: str = "Image") -> np.ndarray:
        """A Rekognition ``Image`` ({"Bytes": ...}) -> RGB pixels."""
        if not isinstance(image, dict):
            raise InvalidInput(f"{field_name} must be an object with Bytes.")
        if "S3Object" in image:
            raise InvalidS3Object(
                f"{field_name}.S3Object is not supported: facewarden is self-hosted and reads no S3 "
                "buckets. Send the image itself in Bytes."
            )
        data = image.get("Bytes")
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidInput(f"{field_name}.Bytes is missing; send the encoded image bytes.")
        return images.decode(
            bytes(data), max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
        )

    def detector_for(self, request: dict[str, Any]) -> str:
        return str(request.get("Detector") or self.settings.detector)


def largest(faces: list[DetectedFace]) -> DetectedFace:
    """The face an operation acts on when it takes one face of an image (Rekognition: the largest)."""
    return max(faces, key=lambda f: f.box.area)


def integer(req: dict[str, Any], name: str, lo: int, hi: int, default: int) -> int:
    """A whole-number request parameter, range-checked, ``default`` when absent."""
    value = req.get(name)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        and not (isinstance(value, float) and value.is_integer())
    ):
        raise InvalidInput(f"{name} must be a whole number between {lo} and {hi}.")
    if not lo <= int(value) <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, not {value}.")
    return int(value)


def number(value: Any, name: str, lo: float, hi: float) -> float:
    """A numeric request parameter, range-checked, with a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number between {lo:g} and {hi:g}.")
    if not lo <= float(value) <= hi:
        raise InvalidInput(f"{name} must be between {lo:g} and {hi:g}, not {value}.")
    return float(value)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
