"""Instance-map PNGs (`samrefiner refine --instance-maps DIR`): one map of object ids per image.

`<maps>/<key>.png` goes with `<images>/<key>.*` (any depth), as label maps do. Its values are
object ids: 0 background, 255 void, every other value one object (palette PNGs as DAVIS-2017 and
YouTube-VOS write them, or 8/16-bit grayscale). Each id is refined as one object, whole (no
split into regions), and painted back with `samrefiner.regions.paint_back`: same ids, same palette,
mode and size, void pixels kept; where refined objects overlap, the higher predicted IoU wins.
Object ids in scores.jsonl are the instance ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from samrefiner.io.datasets import Sample, SampleRef, context_of
from samrefiner.io.labelmaps import LabelMapContext, LabelMaps, write_label_map
from samrefiner.regions import BACKGROUND, VOID, paint_back


@dataclass(frozen=True)
class InstanceMapContext(LabelMapContext):
    """One image's map and its object ids, in the order of the sample's masks."""

    ids: tuple[int, ...]


class InstanceMaps(LabelMaps):
    """Maps of object ids, refined into maps of the same ids under `out`."""

    kind, value_name = "instance maps", "object"

    def load(self, ref: SampleRef) -> Sample:
        path, instance_map, palette, image_path, image = self._read(ref)
        ids = [value for value in np.unique(instance_map).tolist() if value not in (BACKGROUND, VOID)]
        masks = instance_map[None] == np.asarray(ids, instance_map.dtype)[:, None, None]
        objects = [{"id": value} for value in ids]
        context = InstanceMapContext(path, instance_map, palette, tuple(ids))
        return Sample(ref, image_path, image, masks, objects, context=context)

    def write(self, sample: Sample, result: Any) -> dict[str, Any]:
        context = context_of(sample, InstanceMapContext)
        refined = paint_back(context.label_map, list(context.ids), result)
        write_label_map(self.layout.out / context.path.relative_to(self.label_maps), refined, context.palette)
        return {}
