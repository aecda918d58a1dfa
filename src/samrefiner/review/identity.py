"""The id of a review report: which refine output it shows, so that exported decisions are only
ever applied to that output (`samrefiner apply-review` checks it)."""

from __future__ import annotations

import hashlib

from samrefiner.review.datasets import DatasetPair

ID_LENGTH = 16


def report_id(pair: DatasetPair) -> str:
    """A digest of the format, the images that have both a coarse and a refined version, and the
    refine run's scores file (its objects and predicted IoUs); the same for `review` and
    `apply-review` on the same datasets, wherever they lie."""
    digest = hashlib.sha256(pair.kind.encode("utf-8"))
    for key in sorted(ref.key for ref in pair.coarse.refs() if ref.key in pair.refined_refs):
        digest.update(b"\0" + key.encode("utf-8"))
    scores = pair.refined.layout.scores_path
    digest.update(b"\1" + (scores.read_bytes() if scores.is_file() else b""))
    return digest.hexdigest()[:ID_LENGTH]
