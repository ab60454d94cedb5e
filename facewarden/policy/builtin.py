"""The safeguards built into the code, which no policy file can weaken.

These are written here in the policy file's own shape (a TOML file parses to the same dict) and
read by the same parser (:mod:`facewarden.policy.rules`), which puts them in force beside the
file's rules in one place (:func:`~facewarden.policy.rules.rules_in_force` and its neighbours).
A policy file may add to them and tighten them — more sectors or operations in a rule, an extra
rule, a purpose's floor raised, a quota or a cap lowered — but a file that would weaken one is
refused with the built-in's name and what the file did (``facewarden policy check``/``apply``,
the REST ``ApplyPolicy``, a hand-edited file a running service notices, a fresh process):

* deny rules ``moratorium`` and ``surveillance``: the file must keep each (same ``id``) with at
  least its sectors, purposes and operations, no ``until`` (they are indefinite) and no
  exemption beyond the ones below;
* ``floors``: a purpose's ``min_similarity`` may not be set below its floor here; a purpose the
  code does not know gets ``new_purpose_floor`` (and may not declare less);
* ``quotas``: the file must keep each quota (same ``id``) with at least its operations and at
  most its daily limit;
* ``max_expected_false_matches`` is a ceiling for the file's caps (a lower cap is stricter), and
  ``purpose_max_expected_false_matches`` a lower one for the purposes where a false match harms
  someone who is not there to notice it; a purpose that sets no cap of its own gets the
  ``[thresholds]`` cap, never above its ceiling; a purpose the code does not know gets the
  strictest purpose's ceiling (as it gets ``new_purpose_floor``);
* household collections (personal photo libraries, no per-face consent): only organisations of
  sector ``individual``; ``household_purposes`` is the most the file may allow and
  ``household_max_faces`` the most faces one such collection may hold.

Nothing here imports the rest of the policy package; the parser does the reading.
"""

from __future__ import annotations

from typing import Any

#: The sector a household collection's owner must have declared: a natural person.
HOUSEHOLD_SECTOR = "individual"

BUILT_IN: dict[str, Any] = {
    "deny": [
        {
            "id": "moratorium",
            "reason": (
                "facewarden's moratorium, built into the code: organisations in the law-enforcement and "
                "immigration-enforcement sectors may not compute or compare face templates (compare, enrol, "
                "1:N search, user search, video face search, clustering). Face detection and redaction, "
                "which protect privacy, stay available."
            ),
            "sectors": ["law_enforcement", "immigration_enforcement"],
            "operations": ["compare", "enrol", "identify", "cluster"],
            # Amazon's moratorium exempted child-safety organisations (Thorn, NCMEC, Marinus
            # Analytics); they are in none of the sectors above. Named so that a file widening
            # `sectors` (e.g. to "nonprofit") cannot catch them by accident.
            "exemptions": [
                {"name": "child_safety_nonprofit", "sectors": ["nonprofit"], "purposes": ["child_safety"]}
            ],
        },
        {
            "id": "surveillance",
            "reason": (
                "Identification (1:N face search, user search, video face search, clustering) is not "
                "available for surveillance purposes, to any sector: it would identify people who never "
                "enrolled. This rule is built into the code."
            ),
            "purposes": [
                "public_surveillance",
                "crowd_monitoring",
                "protest_monitoring",
                "mass_surveillance",
                "persistent_tracking",
                "watchlist_screening",
                "social_media_monitoring",
                "border_surveillance",
            ],  # fmt: skip
            "operations": ["identify", "cluster"],
        },
    ],
    #: The lowest ``min_similarity`` each purpose may have (calibrated: 80 = 1 false match in 1,000).
    "floors": {
        "administration": 80,
        "photo_organisation": 80,
        "access_control": 90,
        "identity_verification": 90,
        "research_audit": 50,  # measures the whole error curve, on its own keys
        "child_safety": 90,
        "redaction": 90,
    },
    "new_purpose_floor": 80,
    "quotas": [
        {
            "id": "identification",
            "operations": [
                "SearchFaces",
                "SearchFacesByImage",
                "SearchUsers",
                "SearchUsersByImage",
                "StartFaceSearch",
            ],
            "per_key_per_day": 1000,
        },
        {"id": "comparison", "operations": ["CompareFaces"], "per_key_per_day": 1000},
    ],
    #: Ceiling of ``[thresholds] max_expected_false_matches``: at most one expected false match per
    #: 1:N search, whatever the file says (the shipped default is 0.01).
    "max_expected_false_matches": 1.0,
    #: Lower ceilings by purpose (expected false matches per 1:N search; the shipped defaults are
    #: these). A door that opens for a stranger has nobody beside it to notice: at most one in
    #: 1,000 attempts, whatever the number of enrolled people. A false match in child safety points
    #: an investigation at the wrong child or family: at most one in 100 searches, each reviewed by
    #: a person. A personal photo library's owner sees every suggestion and undoes a wrong one, and
    #: an audit measures error rates on consenting test sets: both keep the general ceiling.
    "purpose_max_expected_false_matches": {"access_control": 0.001, "child_safety": 0.01},
    "household_purposes": ["photo_organisation"],
    "household_max_faces": 100_000,
}
