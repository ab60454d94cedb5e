"""The service core: start-up, and the one path every operation takes.

Every adapter (the Rekognition wire protocol, the native REST API, the CLI, the Python API) runs
an operation through :class:`Service`: :meth:`Service.call` with a wire dict (parsed into the
operation's typed request; the typed result comes back in Rekognition's shape) or
:meth:`Service.execute` with a typed request. Either way the service decides first (a denied
request never decodes an image), then runs the operation, then writes one audit record, for
denials and failures too. Nobody bypasses policy: a call without a principal is denied (the CLI
and the Python API act as :meth:`Service.owner_principal`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..jobs import JobQueue
from ..media import buckets, images
from ..audit import AuditLog
from ..audit.entry import AuditEntry, Outcome
from ..audit.journal import ErasureJournal
from ..config import Settings
from ..db import Database, Tx
from ..engine import Calibration, DetectedFace, Engine
from ..errors import (
    AccessDenied,
    FacewardenError,
    InvalidInput,
    ModelMismatch,
    QuotaExceeded,
    ResourceNotFound,
    UnknownOperation,
    UnrecognizedClient,
)
from ..gallery import Collection, Face, Store, open_store
from ..policy.consent import Consents
from ..policy.file import PolicyFile
from ..policy.principals import Principal, Principals
from ..policy.quota import Quotas
from ..policy.rules import CollectionInfo, Decision, Policy
from ..release import Releases
from . import params
from .observe import Observer
from .params import Image, S3Object
from .refusals import refused_operation
from .tokens import PageTokens, RequestTokens, account_id, installation_key, request_digest
from .periodic import Periodic
from .registry import DUTIES, OPERATIONS, STARTUP, Context, Operation, declared_kinds, kind_of

log = logging.getLogger("facewarden.service")

Req = TypeVar("Req")
Res = TypeVar("Res")


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
        #: The engine of the default model (``settings.model``): new collections, CompareFaces,
        #: DetectFaces and ClusterFaces use it; a collection's operations use its own model's
        #: engine (:meth:`engine_for`).
        self.engine = Engine(self.settings)
        self._engines: dict[str, Engine] = {}
        self.db = Database(self.settings.resolved_database_url)
        self._lock = threading.RLock()
        self._store: Store | None = None
        # policy: who (principals), what (the policy file), how much (quotas), consent
        self.principals = Principals(self.db, self.settings.data_dir, self.clock)
        self.quotas = Quotas(self.db)
        self.consents = Consents(self.db, self.clock)
        self.audit = AuditLog(
            self.db, self.settings.data_dir, self.clock, checkpoint_every=audit_checkpoint_every
        )
        self.audit.listeners.append(ErasureJournal(self.settings.erasure_journal_path))
        self.policy_file = PolicyFile(
            PolicyFile.locate(self.settings),
            declared_kinds(),
            self._record_policy_if_changed,
            self._record_policy_refused,
        )
        #: Footage-release requests, the owners' footage libraries and the released copies.
        self.releases = Releases(self.db, self.clock)
        #: What this process does on a period (the retention sweep...), declared with
        #: :func:`~facewarden.service.registry.periodic` by the modules that own the work.
        self.duties = {
            d.name: Periodic(d.name, self.clock, d.every_s, functools.partial(d.run, self))
            for d in DUTIES.values()
        }
        #: Durable jobs (video analysis, redaction) in the same database.
        self.jobs = JobQueue(self.db, self.clock)
        #: Told of every operation and audit record (:mod:`facewarden.service.observe`).
        self.observers: list[Observer] = []
        # the wire's tokens: NextToken (signed), ClientRequestToken (idempotency), the account id
        self.page_tokens = PageTokens(installation_key(self.settings.data_dir, "next-token"))
        self.request_tokens = RequestTokens(self.db, self.clock)
        self.account_id = account_id(self.settings.data_dir)
        self._closed = False
        if sweep_on_start:
            try:
                self.sweep()
            except Exception:
                log.exception("retention sweep at start-up failed")
        for check in STARTUP:  # e.g. household collections policy now refuses (service/household.py)
            try:
                check(self)
            except Exception:
                log.exception("start-up check %s failed", getattr(check, "__name__", check))

    def close(self) -> None:
        """Sign a final audit checkpoint, then close the store and the database."""
        if self._closed:
            return
        self._closed = True
        for duty in self.duties.values():
            duty.stop()
        try:
            self.audit.checkpoint()
        except Exception:
            log.exception("could not write the closing audit checkpoint")
        if self._store is not None:
            try:
                self._store.close()
            except Exception:
                log.warning("could not close the gallery store", exc_info=True)
        self.db.close()

    # ---- the gallery store (opened on first use) ---------------------------------------------
    @property
    def store(self) -> Store:
        """The gallery store, opened on first use (with the service's clock, so that indexing
        times, retention and consent expiry agree)."""
        store = self._store
        if store is None:
            with self._lock:
                store = self._store
                if store is None:
                    store = open_store(self.db, self.settings)
                    store.clock = self.clock
                    self._store = store
        return store

    def collections(self) -> Iterator[Collection]:
        """Every collection, read a page at a time."""
        after = None
        while page := self.store.list_collections(after=after, limit=1000):
            yield from page
            after = page[-1].collection_id

    def faces(self, collection_id: str) -> Iterator[Face]:
        """Every stored face of a collection, read a page at a time (hidden ones too: this is for
        the service's own upkeep; reads go through :mod:`facewarden.service.visible`)."""
        after = None
        while page := self.store.list_faces(collection_id, after=after, limit=1000):
            yield from page
            after = page[-1].face_id

    def collection_info(self, collection_id: str | None, tx: Tx | None = None) -> CollectionInfo | None:
        """What policy needs to know about a collection, or None if it does not exist."""
        if not collection_id:
            return None
        try:
            col = self.store.get_collection(collection_id, tx)
        except ResourceNotFound:
            return None
        return _info(col)

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

    # ---- policy ------------------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self.policy_file.policy

    def reload_policy(self, why: str = "reload") -> Policy:
        """Re-read the policy file; record its hash in the audit log if it changed."""
        return self.policy_file.reload(why)

    def apply_policy(self, text: str, principal: Principal | None = None) -> Policy:
        """Validate ``text``, make it the policy file in force and record its hash."""
        return self.policy_file.apply(text, by=f"{principal.org}/{principal.key_id}" if principal else None)

    def _record_policy_if_changed(self, policy: Policy, why: str) -> bool:
        """Append a PolicyChanged record if ``policy`` differs from the last one recorded."""
        with self.db.transaction(lock="audit") as tx:
            last = tx.scalar(
                "SELECT record FROM audit_log WHERE operation = 'PolicyChanged' ORDER BY seq DESC LIMIT 1"
            )
            if last and json.loads(last).get("policy_hash") == policy.sha256:
                return False
            entry = AuditEntry(
                "PolicyChanged",
                "recorded",
                "policy",
                f"policy in force ({why})",
                policy.sha256,
                details={"version": policy.version, "name": policy.name, "source": policy.source},
            )
            self.audit.append(entry.record(), tx=tx)
        return True

    def _record_policy_refused(self, why: str, exc: FacewardenError, sha256: str | None) -> None:
        """Audit a policy file refused at start-up or on reload (invalid, or weakening a built-in
        safeguard): the policy in force (if any) stays."""
        in_force = getattr(self, "policy_file", None)
        entry = AuditEntry(
            "PolicyRefused",
            "denied",
            getattr(exc, "rule", None) or "policy_invalid",
            exc.message[:2000],
            in_force.policy.sha256 if in_force is not None else "",
            details={"why": why, "refused_sha256": sha256, "error": exc.aws_code},
        )
        self.audit.append(entry.record())

    def visible_collection(self, ctx: Context, collection: str | Collection) -> bool:
        """May the caller see this collection (e.g. in ListCollections)? Household collections of
        others, other organisations' and out-of-scope collections are not listed. ``collection`` is
        a collection id or a gallery Collection (which saves a lookup)."""
        if isinstance(collection, str):
            cid, info = collection, self.collection_info(collection)
        else:
            cid, info = collection.collection_id, _info(collection)
        d = self.policy.decide(
            ctx.principal, ctx.operation, ctx.kind, info, collection_id=cid, now=self.clock()
        )
        return d.allowed

    def effective_threshold(
        self,
        ctx: Context,
        requested: float | None,
        gallery_size: int,
        *,
        counted: str = "faces",
        faces: int | None = None,
        subjects: int | None = None,
        calibration: Calibration | None = None,
    ) -> dict[str, Any]:
        """The similarity threshold a match must reach: the highest of the requested threshold,
        the purpose's floor and the threshold the gallery size requires (N x FMR <= the purpose's
        cap on expected false matches per search, FMR read from the model's calibration).

        ``gallery_size`` is the number of chances a search gives a stranger: the faces of a face
        search, the users (each one pooled score) of a user search; ``counted`` says which
        ("faces" | "users"), ``faces`` and ``subjects`` how many faces and people (distinct
        subjects) the gallery holds; ``calibration`` is the searched collection's model's (default:
        the service's model). Sets ``ctx.applied_threshold`` and returns it: {"Similarity",
        "Source" ("requested" | "floor" | "gallery_size"), "FalseMatchRate",
        "ExpectedFalseMatches", "GallerySize", "GallerySizeCounts", "GalleryFaces",
        "GallerySubjects" (when known), "RequestedSimilarity", "PurposeFloor",
        "MaxExpectedFalseMatches", "CapMet"}; a search adds "WithheldByCap".
        """
        cal = calibration or self.engine.calibration
        req = float(self.settings.match_threshold if requested is None else requested)
        purpose = ctx.principal.purpose if ctx.principal else None
        floor = self.policy.min_similarity(purpose) if purpose else 0.0
        cap = self.policy.cap_for(purpose)
        n = max(0, int(gallery_size))
        by_gallery = cal.similarity_for_fmr(cap / n) if n > 0 else 0.0
        similarity, source = req, "requested"
        for value, name in ((floor, "floor"), (by_gallery, "gallery_size")):
            if value > similarity + 1e-9:
                similarity, source = value, name
        # Shown to 4 decimals, rounded up: what is shown is what is applied.
        similarity = min(100.0, math.ceil(similarity * 1e4 - 1e-6) / 1e4)
        fmr = cal.fmr(similarity)
        applied = {
            "Similarity": similarity,
            "Source": source,
            "FalseMatchRate": fmr,
            "ExpectedFalseMatches": n * fmr,
            "GallerySize": n,
            "GallerySizeCounts": counted,
            "GalleryFaces": n if faces is None else int(faces),
            **({} if subjects is None else {"GallerySubjects": int(subjects)}),
            "RequestedSimilarity": req,
            "PurposeFloor": floor,
            "MaxExpectedFalseMatches": cap,
            # False when even similarity 100 cannot keep N x FMR under the cap (a gallery beyond
            # what the model's calibration can serve); the response says so.
            "CapMet": n * fmr <= cap * (1 + 1e-9),
        }
        ctx.applied_threshold = applied
        return applied

    # ---- monitoring --------------------------------------------------------------------------
    def add_observer(self, observer: Observer) -> None:
        """Tell ``observer`` of every operation that finishes and every audit record appended."""
        self.observers.append(observer)
        self.audit.listeners.append(lambda appended: observer.audit_appended(appended.record))

    def _observe(self, op: Operation[Any, Any], outcome: str, started: float) -> None:
        seconds = time.perf_counter() - started
        for observer in self.observers:
            try:
                observer.operation_finished(op.name, op.kind.value, outcome, seconds)
            except Exception:  # noqa: BLE001 - monitoring never fails a call
                log.exception("observer failed")

    # ---- the one path ------------------------------------------------------------------------
    def call(
        self,
        operation_name: str,
        request: Mapping[str, Any],
        principal: Principal | None = None,
        *,
        region: str | None = None,
        console_read: bool = False,
    ) -> dict[str, Any]:
        """Run one operation on a wire dict (Rekognition's member names) and return its result in
        Rekognition's shape. See :meth:`execute`. ``region``: the region the request was signed
        for (it goes into ARNs). ``console_read``: the web console asks to draw a page; if the
        operation is a declared read (:attr:`Operation.reads`), its record is marked
        ``details.console_read`` (any other operation's record is not: nothing that computes or
        changes anything can be hidden that way)."""
        op = OPERATIONS.get(operation_name)
        if op is None:
            refusal = refused_operation(operation_name)
            if refusal is None:
                raise UnknownOperation(
                    f"Unknown operation {operation_name!r}. facewarden offers: {', '.join(sorted(OPERATIONS))}."
                )
            self._audit(Context(operation_name, None, principal), "denied", refusal.rule, refusal.reason)
            raise refusal
        if not isinstance(request, Mapping):
            raise InvalidInput("The request must be a JSON object.")
        result: dict[str, Any] = params.to_wire(
            self._run(op, principal, request, region, console_read=console_read and op.reads)
        )
        return result

    def execute(
        self, op: Operation[Req, Res], request: Req, principal: Principal | None, *, region: str | None = None
    ) -> Res:
        """Run one operation on a typed request: decide (before decoding anything), check the
        request, run, audit once. Raises AccessDenied (rule + reason) or QuotaExceeded when policy
        refuses, after auditing it."""
        if not isinstance(request, op.request):
            raise InvalidInput(f"{op.name} takes a {op.request.__name__}, not a {type(request).__name__}.")
        return self._run(op, principal, request, region)

    def _run(
        self,
        op: Operation[Req, Res],
        principal: Principal | None,
        source: Any,
        region: str | None = None,
        *,
        console_read: bool = False,
    ) -> Res:
        """:meth:`_decide_run_audit`, timed and told to the observers with its outcome."""
        started, outcome = time.perf_counter(), "error"
        try:
            result = self._decide_run_audit(op, principal, source, region, console_read=console_read)
            outcome = "ok"
            return result
        except (AccessDenied, QuotaExceeded):
            outcome = "denied"
            raise
        except FacewardenError:
            outcome = "failed"
            raise
        finally:
            if self.observers:
                self._observe(op, outcome, started)

    def _decide_run_audit(
        self,
        op: Operation[Req, Res],
        principal: Principal | None,
        source: Any,
        region: str | None = None,
        *,
        console_read: bool = False,
    ) -> Res:
        """``source``: the wire dict (parsed only after the decision) or the typed request."""
        if principal is not None and not isinstance(principal, Principal):
            raise InvalidInput("principal must be a facewarden Principal (see Service.owner_principal).")
        self.policy_file.reload_if_changed()
        for duty in self.duties.values():
            duty.maybe_run()
        ctx = Context(
            op.name,
            op.kind,
            principal,
            collection_id=_str_or_none(params.peek(source, "collection_id")),
            region=region,
        )
        if console_read:
            ctx.details["console_read"] = True
        decision = self._decide_or_deny(ctx, self._collection_for(op, ctx, source))
        try:
            request = (
                params.parse(op.request, source) if isinstance(source, Mapping) else params.validate(source)
            )
            request = self._read_s3_images(ctx, request)
            token = getattr(request, "client_request_token", None)
            result = op.run(self, ctx, request) if token is None else self._run_once(op, ctx, request, token)
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

    def _run_once(self, op: Operation[Req, Res], ctx: Context, request: Req, token: str) -> Res:
        """Run a request that carries a ClientRequestToken at most once: a repeat with the same
        parameters gets the first response (audited as a replay), with other parameters
        IdempotentParameterMismatch."""
        digest = request_digest(params.to_wire(request))
        org = ctx.caller.org
        first = self.request_tokens.recall(org, op.name, token, digest)
        if first is not None:
            ctx.details["idempotent_replay"] = True
            return params.parse(op.result, first)
        result = op.run(self, ctx, request)
        self.request_tokens.remember(org, op.name, token, digest, params.to_wire(result))
        return result

    def collection_arn(self, ctx: Context, collection_id: str) -> str:
        """``arn:aws:rekognition:REGION:ACCOUNT:collection/ID``: the request's region (the CLI's and
        the REST API's: ``FACEWARDEN_REGION``) and this installation's account id."""
        region = ctx.region or self.settings.region
        return f"arn:aws:rekognition:{region}:{self.account_id}:collection/{collection_id}"

    def _collection_for(self, op: Operation[Any, Any], ctx: Context, source: Any) -> CollectionInfo | None:
        """The collection policy decides on: the one named, or the one a create would make."""
        try:
            if op.creates_collection and ctx.collection_id:
                mode = params.peek(source, "consent_mode") or "required"
                return CollectionInfo(
                    ctx.collection_id, ctx.principal.org if ctx.principal else None, str(mode).lower()
                )
            return self.collection_info(ctx.collection_id)
        except FacewardenError:
            return None

    def _decide_or_deny(self, ctx: Context, info: CollectionInfo | None, *, quota: bool = True) -> Decision:
        """The policy half of the path: decide, consume quota; a refusal is audited and raised."""
        now = self.clock()
        policy = self.policy
        decision = policy.decide(
            ctx.principal, ctx.operation, ctx.kind, info, collection_id=ctx.collection_id, now=now
        )
        ctx.decision = decision
        if not decision.allowed:
            self._audit(ctx, "denied", decision.rule_id, decision.reason)
            raise AccessDenied(decision.reason, decision.rule_id)
        if not quota or ctx.principal is None or ctx.kind is None:
            return decision
        try:
            used = self.quotas.consume(policy, ctx.principal, ctx.operation, ctx.kind, now)
        except QuotaExceeded as exc:
            self._audit(ctx, "denied", exc.rule, exc.reason)
            raise
        if used:
            ctx.details["quota_used"] = used
        return decision

    def authorize(
        self,
        principal: Principal | None,
        name: str,
        collection_id: str | None = None,
        *,
        audit_allowed: bool = True,
        check: Callable[[Context], None] | None = None,
    ) -> None:
        """Decide the operation or activity ``name`` (by its declared kind) before work that runs
        outside :meth:`call` (bulk indexing in worker processes, evaluations) computes any template.
        ``check`` adds the operation's own decisions that need no pixels (e.g. the consent of the
        subject a file is about). A refusal is audited and raised; an allowed decision is audited
        too unless the work's own calls will be (they also count against quotas; this does not)."""
        if principal is not None and not isinstance(principal, Principal):
            raise InvalidInput("principal must be a facewarden Principal (see Service.owner_principal).")
        self.policy_file.reload_if_changed()
        ctx = Context(name, kind_of(name), principal, collection_id=collection_id)
        try:
            info = self.collection_info(collection_id)
        except FacewardenError:
            info = None
        decision = self._decide_or_deny(ctx, info, quota=False)
        if check is not None:
            try:
                check(ctx)
            except AccessDenied as exc:
                self._audit(ctx, "denied", exc.rule, exc.reason)
                raise
        if audit_allowed:
            self._audit(ctx, "allowed", decision.rule_id, decision.reason)

    # ---- audit -------------------------------------------------------------------------------
    def _audit(
        self, ctx: Context, decision: Outcome, rule: str, reason: str, tx: Tx | None = None
    ) -> dict[str, Any]:
        entry = AuditEntry(
            ctx.operation,
            decision,
            rule,
            reason,
            self.policy.sha256,
            **AuditEntry.caller(ctx.principal),
            collection=ctx.collection_id,
            counts=ctx.counts,
            matched_face_ids=ctx.matched_face_ids,
            applied_threshold=ctx.applied_threshold,
            subjects=[self.audit.subject_ref(s) for s in ctx.subjects],
            details=ctx.details,
        )
        ctx.audit_record = self.audit.append(entry.record(), tx=tx)
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
        who = AuditEntry.caller(principal)
        if principal is None:
            who["org"] = org
        entry = AuditEntry(
            operation_name,
            "recorded",
            "system",
            f"{operation_name} by the service",
            self.policy.sha256,
            **who,
            collection=collection,
            counts=counts or {},
            subjects=[self.audit.subject_ref(s) for s in (subjects or [])],
            details=details or {},
        )
        return self.audit.append(entry.record(), tx=tx)

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
        who = AuditEntry.caller(self.principal_for_key(access_key_id) if access_key_id else None)
        who["key"] = access_key_id
        entry = AuditEntry(
            operation or "(unknown)",
            "denied",
            "authentication",
            reason[:500],
            self.policy.sha256,
            **who,
            details={"error": error_code, "adapter": adapter, "remote": remote},
        )
        self.audit.append(entry.record())

    # ---- periodic duties (retention and consent expiry) ---------------------------------------
    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Run every periodic duty now (e.g. purge templates past their collection's retention and
        erase what expired consents covered: :mod:`facewarden.service.retention`); their counts."""
        done: dict[str, int] = {}
        for duty in self.duties.values():
            done.update(duty.run(now))
        return done

    # ---- shared steps ------------------------------------------------------------------------
    def s3_path(self, principal: Principal, s3: S3Object) -> Path:
        """The file an ``S3Object`` names, if ``principal`` may read its bucket: an organisation
        reads the bucket named after it; the installation's owner reads every bucket."""
        if not principal.owner and s3.bucket != principal.org:
            raise AccessDenied(
                f"Bucket {s3.bucket!r} is not organization {principal.org}'s: an organization reads the "
                f"bucket named after it ({principal.org!r}); only the installation's owner reads others.",
                "bucket_scope",
            )
        return buckets.resolve(self.settings.resolved_buckets_dir, s3.bucket, s3.name, s3.version)

    def _read_s3_images(self, ctx: Context, request: Req) -> Req:
        """Images given as S3Object are read (within the image byte limit) before the operation runs."""
        if not dataclasses.is_dataclass(request):
            return request
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(request):
            value = getattr(request, f.name)
            if isinstance(value, Image) and value.s3_object is not None and not value.data:
                changes[f.name] = self._read_s3_image(ctx, value.s3_object)
            elif isinstance(value, list) and any(isinstance(v, Image) and v.s3_object for v in value):
                changes[f.name] = [
                    self._read_s3_image(ctx, v.s3_object) if isinstance(v, Image) and v.s3_object else v
                    for v in value
                ]
        return dataclasses.replace(request, **changes) if changes else request  # type: ignore[type-var]

    def _read_s3_image(self, ctx: Context, s3: S3Object) -> Image:
        path = self.s3_path(ctx.caller, s3)
        return Image(images.read_bytes(path, max_bytes=self.settings.max_image_bytes), s3)

    def decode_image(self, image: Image) -> np.ndarray:
        """An image's bytes -> RGB pixels (within the configured size limits)."""
        return images.decode(
            image.data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
        )

    def detector(self, requested: str | None) -> str:
        """The face detector a request asks for, or the configured one."""
        return requested or self.settings.detector

    def engine_for(self, model_version: str) -> Engine:
        """The engine of a model version (a collection's), made on first use and kept: every
        operation on a collection computes and compares templates with the collection's model."""
        if model_version == self.engine.model_version:
            return self.engine
        engine = self._engines.get(model_version)
        if engine is None:
            with self._lock:
                engine = self._engines.get(model_version)
                if engine is None:
                    try:
                        engine = Engine(self.settings, model=model_version)
                    except InvalidInput:
                        raise ModelMismatch(
                            f"This collection holds templates of model {model_version}, which this "
                            "installation does not have; register it (facewarden model add) or re-index "
                            "the photos into a new collection."
                        ) from None
                    self._engines[model_version] = engine
        return engine


def largest(faces: list[DetectedFace]) -> DetectedFace:
    """The face an operation acts on when it takes one face of an image (Rekognition: the largest)."""
    return max(faces, key=lambda f: f.box.area)


def _info(col: Collection) -> CollectionInfo:
    return CollectionInfo(col.collection_id, col.owner_org, col.consent_mode, col.retention_days)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
