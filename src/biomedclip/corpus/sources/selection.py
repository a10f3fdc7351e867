"""Which articles a source yields: license class, retracted articles, PMCID lists and a limit."""

from __future__ import annotations

from dataclasses import dataclass

from biomedclip.corpus.records import ArticleMeta

LICENSE_CLASSES = ("all", "commercial", "noncommercial")
COMMERCIAL_LICENSES = frozenset({"CC BY", "CC0"})


def license_class(code: str | None) -> str:
    """``commercial`` for CC BY / CC0 (PMC's ``oa_comm``), ``noncommercial`` for other CC licenses, else ``other``.

    Codes are PMC's ``license_code`` values (``CC BY``, ``CC BY-NC-SA``, ``CC0``, ...), compared without case
    and with ``-``/space variants (``CC-BY``) accepted.
    """
    if not code:
        return "other"
    normal = " ".join(code.upper().replace("CC-", "CC ").split())
    if normal in COMMERCIAL_LICENSES:
        return "commercial"
    return "noncommercial" if normal.startswith("CC ") else "other"


@dataclass(frozen=True)
class Selection:
    """Article selection. Defaults follow the paper (no license filter) but drop retracted articles.

    Attributes:
        license: ``all``; ``commercial`` (CC BY and CC0 only, PMC's ``oa_comm``); ``noncommercial`` (the other
            Creative Commons licenses, PMC's ``oa_noncomm``). Articles of unknown license are only in ``all``.
        include_retracted: keep articles flagged as retracted.
        pmcids: keep only these PMCIDs (``PMC123`` form); None keeps all.
        limit: stop after this many selected articles; None for no limit.
    """

    license: str = "all"
    include_retracted: bool = False
    pmcids: frozenset[str] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.license not in LICENSE_CLASSES:
            raise ValueError(f"license must be one of {LICENSE_CLASSES}, not {self.license!r}")

    def wants_pmcid(self, pmcid: str | None) -> bool:
        """Whether an article with this PMCID may be selected (None: unknown yet, so maybe)."""
        return self.pmcids is None or pmcid is None or pmcid in self.pmcids

    def admits(self, meta: ArticleMeta) -> bool:
        """Whether an article with this metadata is selected (the limit is the source's job)."""
        if self.pmcids is not None and meta.pmcid not in self.pmcids:
            return False
        if meta.is_retracted and not self.include_retracted:
            return False
        if self.license == "all":
            return True
        return license_class(meta.license) == self.license
