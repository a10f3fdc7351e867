"""Licences: a licence URL, code or statement read as a Creative Commons code, and the group it puts a figure in.

Groups (``license_group``), as BIOMEDICA groups its samples:

* ``commercial``: CC0, CC BY, CC BY-SA, CC BY-ND and public domain (the Public Domain Mark, "lies in the
  public domain"): PMC's commercial-use subset plus public domain works;
* ``noncommercial``: every licence with a NonCommercial term (CC BY-NC, CC BY-NC-SA, CC BY-NC-ND);
* ``other``: no licence, an unknown one, or publisher terms (PMC's ``NO-CC CODE``, the ``TDM`` of author
  manuscripts, "Open Government Licence", ...).

A licence is read from a URL (``creativecommons.org/licenses/by-nc-nd/4.0/``), a code (``CC BY-NC``,
``cc-by 4.0``, ``CC BY NC``) or a statement ("... under a Creative Commons Attribution-NonCommercial 4.0
licence"). In a statement the Attribution licence wins over a CC0 waiver that applies to the data only (BMC's
"The Creative Commons Public Domain Dedication waiver ... applies to the data").
"""

from __future__ import annotations

import re

COMMERCIAL, NONCOMMERCIAL, OTHER = "commercial", "noncommercial", "other"
LICENSE_GROUPS = (COMMERCIAL, NONCOMMERCIAL, OTHER)
PUBLIC_DOMAIN = "public domain"
COMMERCIAL_CODES = frozenset({"CC0", "CC BY", "CC BY-SA", "CC BY-ND", PUBLIC_DOMAIN})
NON_CC_CODES = ("NO-CC CODE", "TDM")  # PMC's codes for publisher terms and author manuscripts

NC = r"non-?commercial"
SEP = r"[ _-]"
CC_LICENSES = (
    (re.compile(rf"licenses/by-nc-nd|\bcc{SEP}by{SEP}nc{SEP}nd\b|attribution{SEP}{NC}[-, ]*no{SEP}?deriv", re.I),
     "CC BY-NC-ND"),
    (re.compile(rf"licenses/by-nc-sa|\bcc{SEP}by{SEP}nc{SEP}sa\b|attribution{SEP}{NC}[-, ]*share{SEP}?alike", re.I),
     "CC BY-NC-SA"),
    (re.compile(rf"licenses/by-nc|\bcc{SEP}by{SEP}nc\b|attribution{SEP}{NC}", re.I), "CC BY-NC"),
    (re.compile(rf"licenses/by-nd|\bcc{SEP}by{SEP}nd\b|attribution{SEP}no{SEP}?deriv", re.I), "CC BY-ND"),
    (re.compile(rf"licenses/by-sa|\bcc{SEP}by{SEP}sa\b|attribution{SEP}share{SEP}?alike", re.I), "CC BY-SA"),
    (re.compile(rf"licenses/by/|licenses/by$|\bcc{SEP}by\b|creative commons attribution", re.I), "CC BY"),
    (re.compile(rf"publicdomain/zero|\bcc{SEP}?0\b|\bcc{SEP}?zero|public domain dedication", re.I), "CC0"),
    (re.compile(r"publicdomain/mark|\bpublic[ -]domain\b", re.I), PUBLIC_DOMAIN),
)  # fmt: skip


def license_code(text: str | None) -> str | None:
    """A licence URL, code or statement as ``CC BY``/``CC BY-NC``/``CC0``/``public domain``/...; None when it
    names no Creative Commons licence nor the public domain."""
    if not text:
        return None
    for pattern, code in CC_LICENSES:
        if pattern.search(text):
            return code
    return None


def license_group(license: str | None) -> str:
    """``commercial``, ``noncommercial`` or ``other`` for a licence URL, code or statement (see the module)."""
    code = license_code(license)
    if code is None:
        return OTHER
    return NONCOMMERCIAL if "-NC" in code else COMMERCIAL if code in COMMERCIAL_CODES else OTHER
