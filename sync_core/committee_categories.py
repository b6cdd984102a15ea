"""The committee categories of V1 and V2, pure data (both directions map them)."""

from __future__ import annotations

COMMITTEE_CATEGORIES: frozenset[str] = frozenset(
    {
        "Ambassador",
        "Board",
        "Code of Conduct",
        "Committers",
        "Expert Group",
        "Finance Committee",
        "Government Advisory Council",
        "Legal Committee",
        "Maintainers",
        "Marketing Committee/Sub Committee",
        "Marketing Mailing List",
        "Marketing Oversight Committee/Marketing Advisory Committee",
        "Newsletter",
        "Other",
        "Product Security",
        "Special Interest Group",
        "Technical Advisory Committee",
        "Technical Mailing List",
        "Technical Oversight Committee",
        "Technical Steering Committee",
        "Working Group",
    }
)


# V1's combined category; committee service v0.4.26 and later refuse it and have
# the two halves instead: the committee's name says which one it is.
COMBINED_TECHNICAL_CATEGORY = "Technical Oversight Committee/Technical Advisory Committee"


TECHNICAL_OVERSIGHT_CATEGORY = "Technical Oversight Committee"


TECHNICAL_ADVISORY_CATEGORY = "Technical Advisory Committee"
