"""The photo-library bench: does a gallery of several thousand people find the people enrolled in
it, and name strangers no more often than its cap says?

    .venv/bin/python bench/bench_library.py [--model dlib-resnet-v1] [--purpose photo_organisation]

The library: every photo of ``../shared/faces_impostors`` (3,000 people, one photo each; those with
a face) as strangers, with their names as ExternalImageId, plus the 32 people of ``../shared/faces``
enrolled with up to E = 1, 2 or 4 photos each, as users (each photo its ExternalImageId too).
About 3,000 people and 3,010-3,100 faces.

Probes: every photo of a person with 2 or more photos searches the library (leave-one-out, in
folds: fold f searches with everyone's f-th photo, and each person's enrolled photos are the first
E of their other photos, so every E is measured on the same 119 searches); and every stranger
searches it with its own face left out (3,000 searches of people never enrolled).

Measured, for face search (SearchFacesByImage: every face a candidate) and user search
(SearchUsersByImage: only users): rank-1 hit rate (the right person first, above the applied
threshold) with its Wilson interval, wrong people at rank 1, false matches per 100 stranger
searches (people wrongly named, with a Poisson interval) against the cap, the applied threshold.

* **after**: the service's own search functions (``face_matches`` / ``user_matches``, on a SQLite
  gallery built through the store) with the policy's cap for the purpose: a face search counts
  faces, a user search counts users and scores each from all its faces (``Calibration.pooled``);
  the fine tail above 99. Probes are templates computed once (the same engine, detector and model
  as the service), so the searches skip decoding and detection.
* **(people, m chances)**: face search under the other rule that keeps the cap, recomputed from
  the same distances: people counted instead of faces, each face of a person with m photos judged
  as m chances. It moves the false-match budget from people with many photos to people with one,
  and in a library the people searched for are the ones with many photos.
* **before**: the rule this replaced, recomputed from the same distances: gallery size = faces,
  one cap of 0.01 for every purpose, the scale that stopped at 100 (FMR 1e-5) and read every
  closer face as 100, and a user scored by its best face alone.

Then the pooling measurements behind the user score (``Calibration.pooled``): how much more often
the best of m photos of one person reaches a threshold than one photo (the union bound says at
most m times), and which pooling (best, mean of the top 2, the mean template) finds most people at
the same user-level false match rate. Results also go to ``bench/results/library-<model>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import table  # noqa: E402
from facewarden.config import Settings  # noqa: E402
from facewarden.engine.calibration import Calibration  # noqa: E402
from facewarden.evaluate.embed import embed_images, list_images  # noqa: E402
from facewarden.gallery import NewFace  # noqa: E402
from facewarden.policy.kinds import Kind  # noqa: E402
from facewarden.service import Context, Service  # noqa: E402
from facewarden.service.gallery import face_matches  # noqa: E402
from facewarden.service.users import user_matches  # noqa: E402

SHARED = REPO.parent / "shared"
BOX = {"Width": 0.2, "Height": 0.3, "Left": 0.1, "Top": 0.1}
ENROLLED = (1, 2, 4)
OLD_CAP = 0.01


# ---- data ---------------------------------------------------------------------------------------
def templates(
    settings: Settings, cache: Path
) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[str, np.ndarray]]]]:
    """Strangers (name -> template) and people (name -> [(photo, template)]), embedded once (cached)."""
    strangers_files = list_images(SHARED / "faces_impostors", recursive=False)
    people_files = [p for p in list_images(SHARED / "faces") if p.parent.name not in ("group", "noface")]
    t0 = time.perf_counter()
    emb_p = embed_images(people_files, settings, face_choice="largest", cache_dir=cache, progress=None)
    emb_s = embed_images(strangers_files, settings, face_choice="centre", cache_dir=cache, progress=None)
    print(f"templates: {time.perf_counter() - t0:.0f} s (cached in {cache})", file=sys.stderr)
    strangers = {p.stem: emb_s[str(p)].template for p in strangers_files if emb_s[str(p)].ok}
    people: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for p in sorted(people_files):
        if emb_p[str(p)].ok:
            people[p.parent.name].append((p.name, emb_p[str(p)].template))
    return strangers, dict(people)


def enrolled_photos(photos: list[Any], fold: int, e: int) -> list[Any]:
    """A person's first ``e`` photos other than the ``fold``-th (the probe of this fold)."""
    return [x for i, x in enumerate(photos) if i != fold][:e]


# ---- the rule this replaced -----------------------------------------------------------------------
class Before:
    """The old scale (100 = FMR 1e-5, every closer distance 100) and rule (faces, one cap)."""

    def __init__(self, cal: Calibration) -> None:
        self.cal = cal
        self.d99 = cal.distance_for(99.0)
        self.d100 = cal.distance_for(cal.similarity_for_fmr(1e-5))

    def similarity(self, inner: np.ndarray) -> np.ndarray:
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.asarray(inner, np.float64)))
        s = np.asarray(self.cal.similarity(d), np.float64)
        top = np.minimum(100.0, 99.0 + (self.d99 - d) / (self.d99 - self.d100))
        return np.where(d < self.d99, top, s)

    @staticmethod
    def threshold(faces: int, floor: float = 80.0) -> float:
        return max(floor, min(100.0, 50.0 - 10.0 * math.log10(OLD_CAP / faces)))


# ---- statistics ---------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    c = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    return (max(0.0, mid - c), min(1.0, mid + c))


def poisson_interval(k: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean from a count ``k``."""
    from scipy.stats import chi2

    lo = 0.0 if k == 0 else chi2.ppf(alpha / 2, 2 * k) / 2
    hi = chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2
    return float(lo), float(hi)


# ---- the library through the service -------------------------------------------------------------
def build_service(tmp: Path, model: str) -> tuple[Service, Any]:
    settings = Settings(
        data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'library.sqlite3'}", model=model
    )
    svc = Service(settings, sweep_on_start=False)
    svc.init_owner("home", "individual", purpose="photo_organisation")
    return svc, svc.owner_principal()


def run_after(
    svc: Service,
    principal: Any,
    strangers: dict[str, np.ndarray],
    people: dict[str, list[tuple[str, np.ndarray]]],
    e: int,
) -> dict[str, Any]:
    store, model = svc.store, svc.engine.model_version
    cid = f"library-{e}"
    store.create_collection(
        cid, model, svc.engine.spec.dim, consent_mode="household", owner_org=principal.org
    )
    names = sorted(strangers)
    stored = store.add_faces(
        cid,
        [NewFace(strangers[n], BOX, 99.0, external_image_id=n, image_id=f"s-{n}") for n in names],
        model,
    )
    stranger_face = {n: f.face_id for n, f in zip(names, stored)}
    out: dict[str, Any] = {"face": defaultdict(int), "user": defaultdict(int)}
    thresholds: dict[str, list[float]] = {"face": [], "user": []}
    folds = max(len(v) for v in people.values())

    def enrol(fold: int) -> list[str]:
        ids = []
        for who, photos in people.items():
            chosen = enrolled_photos(photos, fold, e)
            faces = store.add_faces(
                cid,
                [NewFace(t, BOX, 99.0, external_image_id=who, image_id=f"p-{name}") for name, t in chosen],
                model,
            )
            store.create_user(cid, who)
            store.associate_faces(cid, who, [f.face_id for f in faces])
            ids += [f.face_id for f in faces]
        return ids

    def unenrol(ids: list[str]) -> None:
        for who in people:
            store.delete_user(cid, who)
        store.delete_faces(cid, ids, force=True)

    def ctx(name: str) -> Context:
        return Context(name, Kind.IDENTIFY, principal, collection_id=cid)

    for fold in range(folds):
        ids = enrol(fold)
        col = store.get_collection(cid)
        for who, photos in people.items():
            if len(photos) < 2 or fold >= len(photos):
                continue
            probe = photos[fold][1]
            c = ctx("SearchFacesByImage")
            fm = face_matches(svc, c, store, col, probe, 80, None)
            thresholds["face"].append(c.applied_threshold["Similarity"])
            top = (fm[0].face.get("UserId") or fm[0].face.get("ExternalImageId")) if fm else None
            out["face"]["probes"] += 1
            out["face"]["hits"] += top == who
            out["face"]["wrong"] += top is not None and top != who
            c = ctx("SearchUsersByImage")
            um = user_matches(svc, c, store, col, [probe], 10, None)
            thresholds["user"].append(c.applied_threshold["Similarity"])
            top = um[0].user.user_id if um else None
            out["user"]["probes"] += 1
            out["user"]["hits"] += top == who
            out["user"]["wrong"] += top is not None and top != who
        unenrol(ids)
    # Strangers search the library as enrolled in fold 0, each with its own face left out.
    enrol(0)
    col = store.get_collection(cid)
    for n in names:
        c = ctx("SearchFacesByImage")
        fm = face_matches(svc, c, store, col, strangers[n], 80, None, exclude=(stranger_face[n],))
        out["face"]["stranger_searches"] += 1
        out["face"]["named"] += len({m.face.get("UserId") or m.face.get("ExternalImageId") for m in fm})
        out["face"]["strangers_matched"] += bool(fm)
        c = ctx("SearchUsersByImage")
        um = user_matches(svc, c, store, col, [strangers[n]], 10, None)
        out["user"]["stranger_searches"] += 1
        out["user"]["named"] += len(um)
        out["user"]["strangers_matched"] += bool(um)
    applied = {
        "face": face_ctx_threshold(svc, principal, cid, col),
        "user": user_ctx_threshold(svc, principal, cid, col),
    }
    store.delete_collection(cid)
    return {
        k: dict(v, threshold=float(np.median(thresholds[k])), applied=applied[k], faces=col.face_count)
        for k, v in out.items()
    }


def face_ctx_threshold(svc: Service, principal: Any, cid: str, col: Any) -> dict[str, Any]:
    c = Context("SearchFacesByImage", Kind.IDENTIFY, principal, collection_id=cid)
    return svc.effective_threshold(
        c, None, col.face_count, counted="faces", faces=col.face_count, subjects=col.subject_count
    )


def user_ctx_threshold(svc: Service, principal: Any, cid: str, col: Any) -> dict[str, Any]:
    c = Context("SearchUsersByImage", Kind.IDENTIFY, principal, collection_id=cid)
    return svc.effective_threshold(c, None, col.active_user_count, counted="users", faces=col.face_count)


# ---- the rule this replaced, on the same distances ---------------------------------------------------
def run_before(
    cal: Calibration,
    strangers: dict[str, np.ndarray],
    people: dict[str, list[tuple[str, np.ndarray]]],
    e: int,
) -> dict[str, Any]:
    before = Before(cal)
    names = sorted(strangers)
    S = np.stack([strangers[n] for n in names]).astype(np.float32)
    out: dict[str, Any] = {"face": defaultdict(int), "user": defaultdict(int)}
    folds = max(len(v) for v in people.values())
    threshold = 0.0
    for fold in range(folds):
        gallery = [(who, t) for who, ph in people.items() for _, t in enrolled_photos(ph, fold, e)]
        G = np.stack([t for _, t in gallery]).astype(np.float32)
        gid = [w for w, _ in gallery]
        faces = len(G) + len(S)
        threshold = Before.threshold(faces)
        for who, photos in people.items():
            if len(photos) < 2 or fold >= len(photos):
                continue
            p = photos[fold][1]
            sp = before.similarity(G @ p)
            ss = before.similarity(S @ p)
            best_person = max(range(len(G)), key=lambda i: sp[i])
            cand = [(sp[best_person], gid[best_person])] if sp[best_person] >= threshold else []
            if ss.max() >= threshold:
                cand.append((float(ss.max()), "stranger"))
            top = max(cand)[1] if cand else None
            out["face"]["probes"] += 1
            out["face"]["hits"] += top == who
            out["face"]["wrong"] += top is not None and top != who
            top_user = gid[best_person] if sp[best_person] >= threshold else None  # best face, no pooling
            out["user"]["probes"] += 1
            out["user"]["hits"] += top_user == who
            out["user"]["wrong"] += top_user is not None and top_user != who
    gallery = [(who, t) for who, ph in people.items() for _, t in enrolled_photos(ph, 0, e)]
    G = np.stack([t for _, t in gallery]).astype(np.float32)
    gid = np.asarray([w for w, _ in gallery])
    threshold = Before.threshold(len(G) + len(S))
    sims_people = before.similarity(S @ G.T)  # strangers x enrolled photos
    sims_strangers = before.similarity(S @ S.T)
    np.fill_diagonal(sims_strangers, 0.0)
    for i in range(len(S)):
        people_named = set(gid[sims_people[i] >= threshold].tolist())
        strangers_named = int((sims_strangers[i] >= threshold).sum())
        out["face"]["stranger_searches"] += 1
        out["face"]["named"] += len(people_named) + strangers_named
        out["face"]["strangers_matched"] += bool(people_named or strangers_named)
        out["user"]["stranger_searches"] += 1
        out["user"]["named"] += len(people_named)
        out["user"]["strangers_matched"] += bool(people_named)
    return {k: dict(v, threshold=threshold, faces=len(G) + len(S)) for k, v in out.items()}


def run_subjects(
    cal: Calibration,
    strangers: dict[str, np.ndarray],
    people: dict[str, list[tuple[str, np.ndarray]]],
    e: int,
    cap: float,
) -> dict[str, Any]:
    """Face search with the other rule that keeps the cap: people counted (not faces), each face
    of a person with m photos judged as m chances (``Calibration.pooled``). Same data as above."""
    S = np.stack([strangers[n] for n in sorted(strangers)]).astype(np.float32)
    out: dict[str, Any] = defaultdict(int)
    threshold = max(80.0, cal.similarity_for_fmr(cap / (len(S) + len(people))))
    pooled = np.vectorize(cal.pooled)
    for fold in range(max(len(v) for v in people.values()) + 1):
        enrolled = {who: enrolled_photos(ph, min(fold, len(ph)), e) for who, ph in people.items()}
        G = np.stack([t for who in people for _, t in enrolled[who]]).astype(np.float32)
        gid = np.asarray([who for who in people for _ in enrolled[who]])
        m = np.asarray([len(enrolled[w]) for w in gid])
        if fold < max(len(v) for v in people.values()):
            for who, photos in people.items():
                if len(photos) < 2 or fold >= len(photos):
                    continue
                p = photos[fold][1]
                sp = np.asarray(cal.similarity_from_inner(G @ p))
                ss = np.asarray(cal.similarity_from_inner(S @ p))
                ok = pooled(sp, m) >= threshold
                cand = [(float(x), str(w)) for x, w in zip(sp[ok], gid[ok])]
                if ss.max() >= threshold:
                    cand.append((float(ss.max()), "stranger"))
                top = max(cand)[1] if cand else None
                out["probes"] += 1
                out["hits"] += top == who
                out["wrong"] += top is not None and top != who
            continue
        # strangers, against everyone's first E photos (fold 0)
        enrolled = {who: enrolled_photos(ph, 0, e) for who, ph in people.items()}
        G = np.stack([t for who in people for _, t in enrolled[who]]).astype(np.float32)
        gid = np.asarray([who for who in people for _ in enrolled[who]])
        m = np.asarray([len(enrolled[w]) for w in gid])
        sp = pooled(np.asarray(cal.similarity_from_inner(S @ G.T)), m[None, :])
        ss = np.asarray(cal.similarity_from_inner(S @ S.T))
        np.fill_diagonal(ss, 0.0)
        for i in range(len(S)):
            named = len(set(gid[sp[i] >= threshold].tolist())) + int((ss[i] >= threshold).sum())
            out["stranger_searches"] += 1
            out["named"] += named
    return dict(out, threshold=threshold)


# ---- pooling measurements -------------------------------------------------------------------------
def pooling(
    cal: Calibration, strangers: dict[str, np.ndarray], people: dict[str, list[tuple[str, np.ndarray]]]
) -> dict[str, Any]:
    """Best of m photos against one photo at the same thresholds, and poolings at equal user-level
    false match rate; users are up to 10 sets of m photos of each person, impostors the strangers."""
    S = np.stack(list(strangers.values())).astype(np.float32)
    rng = random.Random(0)
    ids = {k: np.stack([t for _, t in v]) for k, v in people.items()}
    single = np.concatenate([S @ T.T for T in ids.values()], axis=1).ravel()
    out: dict[str, Any] = {"inflation": {}, "rules": {}}
    levels = (1e-2, 1e-3, 1e-4)
    face_thr = {f: cal.distance_for(cal.similarity_for_fmr(f)) for f in levels}
    inner_thr = {f: 1.0 - d * d / 2.0 for f, d in face_thr.items()}
    base = {f: float(np.mean(single >= inner_thr[f])) for f in levels}
    for m in (2, 3, 4, 6):
        imp: dict[str, list[np.ndarray]] = defaultdict(list)
        gen: dict[str, list[np.ndarray]] = defaultdict(list)
        users = 0
        for T in ids.values():
            if len(T) < m + 1:
                continue
            subsets = list(itertools.combinations(range(len(T)), m))
            rng.shuffle(subsets)
            for sub in subsets[:10]:
                users += 1
                U = T[list(sub)]
                rest = [i for i in range(len(T)) if i not in sub]
                centre = U.mean(0)
                centre /= np.linalg.norm(centre)
                for kind, P in (("imp", S), ("gen", T[rest])):
                    scores = -np.sort(-(P @ U.T), axis=1)
                    target = imp if kind == "imp" else gen
                    target["best"].append(scores[:, 0])
                    target["top2"].append(scores[:, :2].mean(1))
                    target["centre"].append(P @ centre)
        best = np.concatenate(imp["best"])
        out["inflation"][m] = {
            "users": users,
            "comparisons": int(best.size),
            **{
                f"{f:g}": {
                    "single": base[f],
                    "best_of_m": float(np.mean(best >= inner_thr[f])),
                    "exceedances": int(np.sum(best >= inner_thr[f])),
                    "ratio": float(np.mean(best >= inner_thr[f]) / base[f]) if base[f] else None,
                }
                for f in levels
            },
        }
        rules = {}
        for rule in ("best", "top2", "centre"):
            a = np.sort(np.concatenate(imp[rule]))[::-1]
            g = np.concatenate(gen[rule])
            rules[rule] = {
                f"{f:g}": float(np.mean(g > a[min(len(a) - 1, int(f * len(a)))])) for f in (1e-3, 1e-4)
            }
        out["rules"][m] = rules
    return out


# ---- report -----------------------------------------------------------------------------------------
def rows(results: dict[str, Any], purpose_cap: float) -> list[list[Any]]:
    out = []
    for e in ENROLLED:
        for mode in ("face", "user"):
            for when in ("before", "after", "subjects"):
                if when == "subjects" and mode == "user":
                    continue
                r = results[when][e][mode] if when != "subjects" else results[when][e]
                lo, hi = wilson(r["hits"], r["probes"])
                n, named = r["stranger_searches"], r["named"]
                plo, phi = poisson_interval(named)
                cap = OLD_CAP if when == "before" else purpose_cap
                out.append(
                    [
                        e,
                        "face search" if mode == "face" else "user search",
                        when if when != "subjects" else "(people, m chances)",
                        f"{r['hits']}/{r['probes']} = {r['hits'] / r['probes']:.1%} [{lo:.0%}, {hi:.0%}]",
                        r["wrong"],
                        f"{100 * named / n:.2f} [{100 * plo / n:.2f}, {100 * phi / n:.2f}]",
                        f"{100 * cap:g}",
                        f"{r['threshold']:.3f}",
                    ]
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model version (default: the service's default)")
    ap.add_argument("--purpose", default="photo_organisation", help="the searching key's purpose")
    ap.add_argument("--cache", default=str(REPO / "bench" / "results" / "cache"))
    args = ap.parse_args()
    base = Settings.from_env()
    settings = base.replace(model=args.model) if args.model else base
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facewarden-library-") as tmp:
        svc, principal = build_service(Path(tmp), settings.model)
        if args.purpose != principal.purpose:
            principal = svc.principals.create_key(principal.org, args.purpose)[0]
        model = svc.engine.model_version
        strangers, people = templates(settings.replace(data_dir=Path(tmp) / "embed"), Path(args.cache))
        cal = svc.engine.calibration
        cap = svc.policy.cap_for(principal.purpose)
        results: dict[str, Any] = {"before": {}, "after": {}, "subjects": {}}
        for e in ENROLLED:
            results["before"][e] = run_before(cal, strangers, people, e)
            results["after"][e] = run_after(svc, principal, strangers, people, e)
            results["subjects"][e] = run_subjects(cal, strangers, people, e, cap)
            print(f"E={e} done at {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        pools = pooling(cal, strangers, people)
        svc.close()
    print(
        f"\nmodel {model}; library: {len(strangers)} strangers + {len(people)} people "
        f"({sum(len(v) for v in people.values())} photos); purpose {principal.purpose}, cap {cap:g} "
        f"expected false matches per search (before: {OLD_CAP:g} for every purpose)\n"
    )
    headers = [
        "E",
        "search",
        "rule",
        "rank-1 hit rate [95%]",
        "wrong",
        "false/100 strangers [95%]",
        "cap/100",
        "threshold",
    ]
    print(table(headers, rows(results, cap)))
    print("\nbest of m photos vs one photo (impostors: the strangers), exceedance ratio (union bound: m)")
    inf_rows = []
    for m, r in pools["inflation"].items():
        inf_rows.append(
            [m, r["users"], r["comparisons"]]
            + [
                f"{r[k]['ratio']:.2f} ({r[k]['exceedances']})" if r[k]["ratio"] is not None else "-"
                for k in ("0.01", "0.001", "0.0001")
            ]
        )
    print(table(["m", "users", "comparisons", "at FMR 1e-2", "1e-3", "1e-4"], inf_rows))
    print("\npooling rules: genuine hit rate at equal user-level FMR (measured on these impostors)")
    print(
        table(
            [
                "m",
                "best 1e-3",
                "best 1e-4",
                "top-2 mean 1e-3",
                "top-2 mean 1e-4",
                "mean template 1e-3",
                "1e-4",
            ],
            [
                [m]
                + [f"{r[rule][f]:.3f}" for rule in ("best", "top2", "centre") for f in ("0.001", "0.0001")]
                for m, r in pools["rules"].items()
            ],
        )
    )
    out = REPO / "bench" / "results" / f"library-{model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"model": model, "cap": cap, "results": results, "pooling": pools}, indent=1, default=str)
    )
    print(f"\n{time.perf_counter() - t0:.0f} s; results in {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
