"""The static page: template files plus JS data files, one per page of objects per view.

Browsers block fetch() on file:// URLs, so the page loads its data with <script> tags:
`data/manifest.js` sets `window.REVIEW_MANIFEST`, and `data/v<V>/p<P>.js` calls
`window.reviewChunk(V, P, objects)` for page P of view V. View 0 holds every object, the
others one class each; within a view objects are in "worth a look" order (`attention`
ascending, objects that kept their coarse mask first), so a score threshold keeps a prefix of
every view.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

from samrefiner.errors import InputError
from samrefiner.review.objects import ObjectSummary

PAGE_SIZE = 60
TEMPLATE_FILES = ("index.html", "review.js", "review.css")
DATA_DIR = "data"
THUMBNAIL_DIR = "thumbs"
SCORE_DECIMALS = 4


def prepare_report_dir(out: Path) -> None:
    """Create `out`, or empty the generated parts of an earlier report there.

    Refuses a non-empty folder that is not a report, so that no other files are ever replaced.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the report folder is a file")
    if out.is_dir() and any(out.iterdir()):
        if not (out / DATA_DIR / "manifest.js").is_file():
            raise InputError(f"{out}: folder is not empty and holds no earlier review report")
        for generated in (DATA_DIR, THUMBNAIL_DIR):
            shutil.rmtree(out / generated, ignore_errors=True)
    (out / THUMBNAIL_DIR).mkdir(parents=True, exist_ok=True)


def write_page(
    summaries: list[ObjectSummary],
    out: Path,
    *,
    title: str,
    source: str,
    page_size: int = PAGE_SIZE,
    report_id: str | None = None,
) -> None:
    """Write the template, the manifest and the chunked object data of a report into `out`.

    `report_id` identifies the report (the browser keeps the decisions under it and writes it into
    the exported file, which `apply-review` checks); by default it is made from `source`, naming
    the reviewed dataset, and the objects.
    """
    ordered = sorted(
        summaries, key=lambda summary: (not summary.kept_coarse, summary.attention, summary.image_id, summary.key)
    )
    labels = sorted({summary.label for summary in ordered})
    views = [("All classes", ordered)]
    if len(labels) > 1:
        views += [(label, [summary for summary in ordered if summary.label == label]) for label in labels]
    data_dir = out / DATA_DIR
    manifest_views = []
    for number, (name, members) in enumerate(views):
        pages = [members[start : start + page_size] for start in range(0, len(members), page_size)]
        (data_dir / f"v{number}").mkdir(parents=True, exist_ok=True)
        for page_number, page in enumerate(pages):
            payload = _compact_json([_page_entry(summary) for summary in page])
            (data_dir / f"v{number}" / f"p{page_number}.js").write_text(
                f"window.reviewChunk({number},{page_number},{payload});\n", encoding="utf-8"
            )
        firsts = [_rounded(page[0].attention) for page in pages]
        manifest_views.append({"name": name, "count": len(members), "firsts": firsts})
    manifest = {
        "version": 1,
        "title": title,
        "reportId": report_id or _report_id(source, ordered),
        "pageSize": page_size,
        "total": len(ordered),
        "hasPredicted": any(summary.predicted_iou is not None or summary.kept_coarse for summary in ordered),
        "views": manifest_views,
    }
    (data_dir / "manifest.js").write_text(f"window.REVIEW_MANIFEST = {_compact_json(manifest)};\n", encoding="utf-8")
    template = resources.files("samrefiner.review")
    for name in TEMPLATE_FILES:
        (out / name).write_bytes(template.joinpath(name).read_bytes())


def _page_entry(summary: ObjectSummary) -> dict:
    return {
        "id": summary.uid,
        "image": summary.image_id,
        "name": summary.image_name or summary.image_id,
        "object": summary.key,
        "class": summary.label,
        "predicted": None if summary.predicted_iou is None else _rounded(summary.predicted_iou),
        "kept": summary.kept_coarse,
        "change": _rounded(summary.change_iou),
        "score": _rounded(summary.attention),
        "thumb": summary.thumbnail,
    }


def _rounded(value: float) -> float:
    return round(float(value), SCORE_DECIMALS)


def _report_id(source: str, ordered: list[ObjectSummary]) -> str:
    digest = hashlib.sha1(source.encode("utf-8"))
    for summary in ordered:
        digest.update(b"\0" + summary.uid.encode("utf-8"))
    return digest.hexdigest()[:16]


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
