"""``biomedclip panels``: split compound figures, split captions, and score both against labelled figures."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from biomedclip.errors import InputError

METRIC_NAMES = {
    "compound_accuracy": "compound accuracy",
    "ap50": "AP50",
    "imageclef_accuracy": "ImageCLEF accuracy",
    "label_accuracy": "label accuracy",
    "alignment_f1": "alignment F1",
}
SUBCAPTION_METRIC_NAMES = {"subcaption_f1": "subcaption F1", "label_set_accuracy": "label sets equal"}


@click.group()
def panels() -> None:
    """Compound figures: panel boxes, letters and subcaptions (detect, subcaptions, eval)."""


def read_rows(path: Path, required: tuple[str, ...] = ("id",)) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSONL file with their line numbers; a bad line is an ``InputError`` naming it."""
    seen: set[str] = set()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path} line {number}: not JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise InputError(f"{path} line {number}: a row must be a JSON object")
            missing = [name for name in required if row.get(name) in (None, "")]
            if missing:
                raise InputError(f"{path} line {number}: missing {', '.join(missing)}")
            if str(row["id"]) in seen:
                raise InputError(f"{path} line {number}: id {row['id']!r} appears twice")
            seen.add(str(row["id"]))
            yield number, row


def _text_field(path: Path, number: int, row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{path} line {number}: {name} must be a string or null")
    return value


def _write_rows(out: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Stream rows as JSONL beside ``out`` and rename the file into place once all are written, so a run that
    fails leaves an earlier output untouched; returns the number of rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as stream:
            for row in rows:
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return count


def _convert_rows(
    inputs: Path, out: Path, convert: Callable[[int, dict[str, Any], str | None], dict[str, Any] | None],
    required: tuple[str, ...] = ("id",),
) -> int:  # fmt: skip
    """Write ``convert(line number, row, caption)`` of every row of the JSONL file ``inputs`` to ``out`` (rows
    for which it gives None are left out) through ``_write_rows``; returns the number written."""

    def converted() -> Iterator[dict[str, Any]]:
        for number, row in read_rows(inputs, required):
            result = convert(number, row, _text_field(inputs, number, row, "caption"))
            if result is not None:
                yield result

    return _write_rows(out, converted())


@panels.command()
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder the rows' image paths are relative to.")  # fmt: skip
@click.option("--captions", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help='JSONL rows {"id", "image", "caption" (optional)}.')  # fmt: skip
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSONL output: one row per figure with its panels.")  # fmt: skip
@click.option("--uncited-labels", is_flag=True,
              help="Read panel letters also where the caption names none (by default the label reader runs only "
                   "for captions that name panel letters, and for rows without a caption).")  # fmt: skip
def detect(images: Path, captions: Path, out: Path, uncited_labels: bool) -> None:
    """Split each figure into panels (boxes, letters, subcaptions); figures that cannot be read are listed in
    OUT.rejected.jsonl with the reason."""
    from PIL import Image, UnidentifiedImageError

    from biomedclip.panels.pipeline import split_figure

    start = time.perf_counter()
    rejected: list[dict[str, Any]] = []
    totals = Counter()

    def figure(number: int, row: dict[str, Any], caption: str | None) -> dict[str, Any] | None:
        try:
            with Image.open(images / str(row["image"])) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            rejected.append({"id": row["id"], "line": number, "image": row["image"], "reason": _reason(error)})
            return None
        split = split_figure(image, caption, uncited_labels=uncited_labels)
        totals["compound"] += split.compound
        totals["panels"] += len(split.panels)
        return {"id": row["id"], **split.as_dict()}

    written = _convert_rows(captions, out, figure, ("id", "image"))
    rejected_path = out.with_name(f"{out.name}.rejected.jsonl")
    if rejected:
        _write_rows(rejected_path, rejected)
    elif rejected_path.exists():
        rejected_path.unlink()
    reasons = Counter(r["reason"] for r in rejected)
    click.echo(
        f"{written} figures ({totals['compound']} compound, {totals['panels']} panels), {len(rejected)} rejected"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if rejected else "")
        + f" in {time.perf_counter() - start:.1f}s"
    )
    click.echo(f"wrote {out}" + (f" and {rejected_path}" if rejected else ""))
    click.echo(f"next: biomedclip panels eval --truth GT.jsonl --pred {out}")


def _reason(error: Exception) -> str:
    from PIL import Image

    if isinstance(error, FileNotFoundError | IsADirectoryError):
        return "image not found"
    if isinstance(error, Image.DecompressionBombError):
        return "image too large"
    return "image does not decode"


@panels.command()
@click.argument("inputs", metavar="IN.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help='JSONL output rows {"id", "shared_caption", "subcaptions": {label: text}}.')  # fmt: skip
def subcaptions(inputs: Path, out: Path) -> None:
    """Split each caption of IN.jsonl ({"id", "caption", "labels" (optional)}) into shared text and subcaptions."""
    from biomedclip.panels.subcaptions import split_caption

    described = Counter()

    def split(number: int, row: dict[str, Any], caption: str | None) -> dict[str, Any]:
        labels = row.get("labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise InputError(f"{inputs} line {number}: labels must be a list of strings")
        parts = split_caption(caption, labels)
        described["with parts"] += bool(parts.parts)
        return {"id": row["id"], "shared_caption": parts.shared, "subcaptions": parts.parts}

    written = _convert_rows(inputs, out, split)
    click.echo(f"{written} captions, {described['with parts']} with panel subcaptions; wrote {out}")


@panels.command(name="eval")
@click.option("--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Ground-truth JSONL in the detect output's shape (compound, shared_caption, panels).")  # fmt: skip
@click.option("--pred", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Predictions: the output of `panels detect`, or of `panels subcaptions`.")  # fmt: skip
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the metrics as JSON to this file.")  # fmt: skip
def eval_panels(truth: Path, pred: Path, json_out: Path | None) -> None:
    """Score predicted panels against ground truth: compound accuracy, AP50, ImageCLEF accuracy, label accuracy,
    alignment F1; or, for `panels subcaptions` output, subcaption F1 and label-set accuracy (definitions:
    biomedclip.panels.metrics)."""
    from biomedclip.panels.metrics import evaluate, subcaption_metrics

    if _is_subcaption_output(pred):
        truth_rows = [row for _, row in read_rows(truth)]
        result = subcaption_metrics(truth_rows, _subcaptions(pred))
        names = SUBCAPTION_METRIC_NAMES
    else:
        result = evaluate(_figures(truth), _figures(pred))
        names = METRIC_NAMES
    for key, name in names.items():
        metric = result[key]
        value = "n/a" if metric.value is None else f"{metric.value:.4f}"
        click.echo(f"{name}: {value} (n={metric.n})")
    if names is METRIC_NAMES:
        click.echo(
            f"figures without a prediction: {result['missing_predictions'].n}; "
            f"predictions of unknown figures (ignored): {result['unknown_predictions'].n}"
        )
    if json_out is not None:
        payload = {key: {"value": metric.value, "n": metric.n} for key, metric in result.items()}
        payload["truth"], payload["pred"] = str(truth), str(pred)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_out}")


def _is_subcaption_output(path: Path) -> bool:
    """Whether a predictions file holds ``panels subcaptions`` rows (a ``subcaptions`` object, no ``panels``)."""
    for _, row in read_rows(path):
        return "subcaptions" in row and "panels" not in row
    return False


def _subcaptions(path: Path) -> dict[str, dict[str, str]]:
    subcaptions = {}
    for number, row in read_rows(path):
        parts = row.get("subcaptions")
        if not isinstance(parts, dict) or not all(isinstance(v, str | None) for v in parts.values()):
            raise InputError(f"{path} line {number}: subcaptions must be an object of label -> text")
        subcaptions[str(row["id"])] = {label: text or "" for label, text in parts.items()}
    return subcaptions


def _figures(path: Path) -> dict[str, Any]:
    """``FigurePanels`` by id; a row without a valid box list is an ``InputError`` naming its line."""
    from biomedclip.panels.types import FigurePanels

    figures = {}
    for number, row in read_rows(path):
        panels_field = row.get("panels")
        if panels_field is None:
            panels_field = []
        if not isinstance(panels_field, list):
            raise InputError(f"{path} line {number}: panels must be a list")
        for index, panel in enumerate(panels_field):
            box = panel.get("box") if isinstance(panel, dict) else None
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
                raise InputError(f"{path} line {number}: panel {index} needs a box [x0, y0, x1, y1]")
            if box[2] < box[0] or box[3] < box[1]:
                raise InputError(f"{path} line {number}: panel {index} box {box} has x1 < x0 or y1 < y0")
            score = panel.get("score", 1.0)
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise InputError(f"{path} line {number}: panel {index} score must be a number")
        figures[str(row["id"])] = FigurePanels.from_dict({**row, "panels": panels_field})
    return figures
