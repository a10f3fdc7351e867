"""biomedclip panels detect | subcaptions | eval through the top-level command (exit codes per docs/CLI.md)."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from biomedclip.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _write(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_subcaptions_with_and_without_labels(tmp_path):
    rows = [
        {"id": "f1", "caption": "Title. (A) First panel. (B) Second panel.", "labels": ["a", "b", "c"]},
        {"id": "f2", "caption": "Chest CT of patient 1 (A) and patient 2 (B)."},
        {"id": "f3", "caption": None},
    ]
    result = _invoke("panels", "subcaptions", _write(tmp_path / "in.jsonl", rows), "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.output
    assert "3 captions, 2 with panel subcaptions" in result.output
    assert _read(tmp_path / "out.jsonl") == [
        {"id": "f1", "shared_caption": "Title.", "subcaptions": {"a": "First panel.", "b": "Second panel.", "c": ""}},
        {
            "id": "f2",
            "shared_caption": None,
            "subcaptions": {"A": "Chest CT of patient 1 (A).", "B": "Chest CT of patient 2 (B)."},
        },
        {"id": "f3", "shared_caption": None, "subcaptions": {}},
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ('{"caption": "x"}', "line 2: missing id"),
        ('{"id": "b", "caption": 3}', "line 2: caption must be a string or null"),
        ('{"id": "b", "caption": "x", "labels": "A"}', "line 2: labels must be a list of strings"),
        ('{"id": "a", "caption": "x"}', "line 2: id 'a' appears twice"),
    ],
)
def test_subcaptions_bad_row_names_its_line_and_keeps_earlier_output(tmp_path, row, message):
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n")
    result = _invoke(
        "panels", "subcaptions", _write(tmp_path / "in.jsonl", ['{"id": "a", "caption": "x"}', row]), "-o", out
    )
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1
    assert out.read_text() == "earlier\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no partial file left


def test_detect_writes_the_contract_rows_and_records_unreadable_images(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (100, 60), "white").save(images / "fig.png")
    (images / "broken.png").write_bytes(b"not an image")
    seen = []
    from biomedclip.panels.pipeline import split_figure

    def fake_split_figure(image, caption, **options):
        seen.append((image.size, caption))
        return split_figure(
            image,
            caption,
            **options,
            detector=lambda img: [((0, 0, 50, 60), 0.9), ((50, 0, 100, 60), 0.8)],
            reader=lambda img, boxes: [("A", 0.9), (None, 0.0)],
        )

    monkeypatch.setattr("biomedclip.panels.pipeline.split_figure", fake_split_figure)
    captions = _write(
        tmp_path / "captions.jsonl",
        [
            {"id": "f1", "image": "fig.png", "caption": "Title. (A) Left plot. (B) Right plot."},
            {"id": "f2", "image": "broken.png"},
            {"id": "f3", "image": "absent.png", "caption": None},
        ],
    )
    out = tmp_path / "out.jsonl"
    result = _invoke("panels", "detect", "--images", images, "--captions", captions, "-o", out)
    assert result.exit_code == 0, result.output
    assert "1 figures (1 compound, 2 panels), 2 rejected" in result.output
    assert seen == [((100, 60), "Title. (A) Left plot. (B) Right plot.")]
    assert _read(out) == [
        {
            "id": "f1",
            "compound": True,
            "shared_caption": "Title.",
            "panels": [
                {"box": [0, 0, 50, 60], "label": "A", "subcaption": "Left plot.", "score": 0.9, "alignment": "label"},
                {
                    "box": [50, 0, 100, 60],
                    "label": None,
                    "subcaption": "Right plot.",
                    "score": 0.8,
                    "alignment": "order",
                },
            ],
        }
    ]
    rejected = _read(tmp_path / "out.jsonl.rejected.jsonl")
    assert [(r["id"], r["line"], r["reason"]) for r in rejected] == [
        ("f2", 2, "image does not decode"),
        ("f3", 3, "image not found"),
    ]


def test_detect_reads_uncited_letters_only_when_asked(tmp_path, monkeypatch):
    """A caption naming no panel letter: the label reader does not run unless --uncited-labels asks for it."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (100, 60), "white").save(images / "fig.png")
    two = [((0, 0, 50, 60), 0.9, None), ((50, 0, 100, 60), 0.8, None)]
    monkeypatch.setattr("biomedclip.panels.layout.detect_panels_and_letters", lambda image, letters: two)
    monkeypatch.setattr("biomedclip.panels.labels.read_labels", lambda *args, **kwargs: [("A", 0.9), ("B", 0.9)])
    captions = _write(tmp_path / "captions.jsonl", [{"id": "f", "image": "fig.png", "caption": "Two plots."}])
    labels = {}
    for flags in ((), ("--uncited-labels",)):
        out = tmp_path / f"out{len(flags)}.jsonl"
        result = _invoke("panels", "detect", "--images", images, "--captions", captions, "-o", out, *flags)
        assert result.exit_code == 0, result.output
        labels[flags] = [p["label"] for p in _read(out)[0]["panels"]]
    assert labels == {(): [None, None], ("--uncited-labels",): ["A", "B"]}


def test_detect_missing_images_folder_is_exit_2(tmp_path):
    captions = _write(tmp_path / "c.jsonl", [{"id": "f", "image": "x.png"}])
    result = _invoke("panels", "detect", "--images", tmp_path / "nope", "--captions", captions, "-o", tmp_path / "o")
    assert result.exit_code == 2


GT_ROW = {
    "id": "f1",
    "compound": True,
    "shared_caption": "Shared words",
    "panels": [
        {"box": [0, 0, 10, 10], "label": "A", "subcaption": "red cat"},
        {"box": [20, 0, 30, 10], "label": "B", "subcaption": "blue dog"},
    ],
}


def test_eval_prints_each_metric_with_n_and_writes_json(tmp_path):
    single = {"id": "f2", "compound": False, "panels": [{"box": [0, 0, 5, 5], "subcaption": "x"}]}
    truth = _write(tmp_path / "gt.jsonl", [GT_ROW, single])
    pred_row = {
        "id": "f1",
        "compound": True,
        "shared_caption": "Shared words",
        "panels": [{"box": [0, 0, 10, 10], "label": "a", "subcaption": "red cat", "score": 0.9}],
    }
    pred = _write(tmp_path / "pred.jsonl", [pred_row])
    result = _invoke("panels", "eval", "--truth", truth, "--pred", pred, "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "compound accuracy: 0.5000 (n=2)" in lines
    assert "ImageCLEF accuracy: 0.5000 (n=1)" in lines
    assert "label accuracy: 0.5000 (n=2)" in lines
    assert "alignment F1: 0.3333 (n=3)" in lines
    # one hit at rank 1 of 3 true panels: recall points 0..0.33 at precision 1
    assert f"AP50: {34 / 101:.4f} (n=3)" in lines
    assert "figures without a prediction: 1; predictions of unknown figures (ignored): 0" in lines
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["label_accuracy"] == {"value": 0.5, "n": 2}


@pytest.mark.parametrize(
    ("panels", "message"),
    [
        ([{"box": [0, 0, 10]}], "line 1: panel 0 needs a box"),
        ([{"box": [10, 0, 0, 10]}], "line 1: panel 0 box [10, 0, 0, 10] has x1 < x0"),
        ([{"box": [0, 0, 10, 10], "score": "high"}], "line 1: panel 0 score must be a number"),
        ("none", "line 1: panels must be a list"),
    ],
)
def test_eval_bad_prediction_row_is_exit_2_naming_the_line(tmp_path, panels, message):
    truth = _write(tmp_path / "gt.jsonl", [GT_ROW])
    pred = _write(tmp_path / "pred.jsonl", [{"id": "f1", "compound": True, "panels": panels}])
    result = _invoke("panels", "eval", "--truth", truth, "--pred", pred)
    assert result.exit_code == 2 and message in result.output


def test_eval_accepts_the_development_set_as_truth_and_as_perfect_prediction(shared_fixtures):
    gt = shared_fixtures / "compound" / "gt.jsonl"
    result = _invoke("panels", "eval", "--truth", gt, "--pred", gt)
    assert result.exit_code == 0, result.output
    assert "compound accuracy: 1.0000 (n=35)" in result.output
    assert "ImageCLEF accuracy: 1.0000 (n=30)" in result.output


def test_eval_scores_subcaptions_output_on_the_development_set(tmp_path, shared_fixtures):
    gt = shared_fixtures / "compound" / "gt.jsonl"
    rows = [json.loads(line) for line in gt.read_text().splitlines()]
    requests = []
    for r in rows:
        labels = sorted({p["caption_label"] for p in r["panels"] if p["caption_label"]})
        requests.append({"id": r["id"], "caption": r["caption"], "labels": labels})
    split = _invoke("panels", "subcaptions", _write(tmp_path / "in.jsonl", requests), "-o", tmp_path / "sub.jsonl")
    assert split.exit_code == 0, split.output
    result = _invoke("panels", "eval", "--truth", gt, "--pred", tmp_path / "sub.jsonl")
    assert result.exit_code == 0, result.output
    f1_line, sets_line = result.output.splitlines()[:2]
    assert f1_line.startswith("subcaption F1: ") and f1_line.endswith("(n=117)")
    assert float(f1_line.split()[2]) >= 0.85
    assert sets_line == "label sets equal: 1.0000 (n=27)"
