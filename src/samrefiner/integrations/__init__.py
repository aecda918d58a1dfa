"""Bridges to other tools' data: `supervision` (sv.Detections) and `fiftyone` (label fields).

Each lives in its own module and imports its tool only there, so it needs its extra:
`pip install samrefiner[supervision]` or `samrefiner[fiftyone]`.
"""
