"""YOLO segment polygons in Ultralytics' pixel-centre convention, both ways.

Vertex `(x, y)` (in pixels: the normalised value times the image's width or height) is the centre
of pixel column x, row y: the convention of OpenCV's `fillPoly`, which Ultralytics
(`polygon2mask`) and supervision (`polygon_to_mask`) use to rasterise YOLO polygons. (COCO's
pycocotools takes vertices as pixel corners instead: `samrefiner.io.polygons`.)

Reading (`fill`): vertices rounded to whole pixels (supervision rounds; Ultralytics truncates,
which gives the same pixels for the lines `ring_line` writes) and filled with `cv2.fillPoly`:
the pixels the outline passes through plus those inside it by the even-odd rule.

Writing (`mask_ring`): every outline of the mask as OpenCV traces it through the centres of its
boundary pixels (`cv2.findContours`, straight runs reduced to their ends), outer boundaries and
holes alike, joined into ONE closed ring: the outlines are the nodes of a Euclidean minimum
spanning tree whose edges (seams) link the nearest vertices of two outlines, and the ring walks
every outline once, going out over each seam and coming back over it. Filled by `fill`, the ring
gives the mask back except for the pixels a seam crosses outside the mask (a seam between two
parts always crosses background; a seam to a hole's outline usually runs over the object): the
seams chosen are the shortest that connect everything. A hole stays a hole (even-odd rule).
`ring_line` writes each vertex a quarter pixel right of and below its pixel centre, so that a
reader that rounds and one that truncates both land on that pixel.
"""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import Delaunay, QhullError, cKDTree

WRITE_OFFSET = 0.25  # pixels: see the module docstring
DECIMALS = 6


def fill(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """H x W bool: the polygon of normalised (x, y) vertices (K x 2) as Ultralytics and supervision
    rasterise it; empty for fewer than 3 vertices."""
    mask = np.zeros((height, width), np.uint8)
    if len(vertices) < 3:
        return mask.astype(bool)
    pixels = np.asarray(vertices, np.float32) * np.array([width, height], np.float32)
    cv2.fillPoly(mask, [np.round(pixels).astype(np.int32)], color=(1,))
    return mask.astype(bool)


def box_vertices(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    """The 4 corners (normalised x, y) of a YOLO box line, as supervision makes a box a polygon."""
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)


def ring_line(ring: np.ndarray, height: int, width: int) -> str:
    """The `x1 y1 x2 y2 ...` text of a ring of pixel vertices (at least 3, repeating the last)."""
    padded = np.concatenate([ring, np.repeat(ring[-1:], max(0, 3 - len(ring)), axis=0)])
    normalised = (padded + WRITE_OFFSET) / (width, height)
    return " ".join(f"{value:.{DECIMALS}f}" for value in normalised.reshape(-1))


def mask_ring(mask: np.ndarray) -> np.ndarray | None:
    """One closed ring (M x 2 int pixel (x, y) vertices) through every outline of `mask` (see the
    module docstring); None for an empty mask."""
    contours, hierarchy = cv2.findContours(
        np.ascontiguousarray(mask, np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    outlines = [contour.reshape(-1, 2).astype(np.int64) for contour in contours]
    if not outlines:
        return None
    seams = seam_tree(outlines)
    kept = _worth_joining(outlines, hierarchy[0][:, 3] < 0, seams, np.asarray(mask, bool))
    if len(kept) < len(outlines):
        index = {old: new for new, old in enumerate(kept)}
        outlines = [outlines[old] for old in kept]
        seams = [(index[a], va, index[b], vb) for a, va, b, vb in seams if a in index and b in index]
    return _walk(outlines, seams)


def _worth_joining(
    outlines: list[np.ndarray], outer: np.ndarray, seams: list[tuple[int, int, int, int]], mask: np.ndarray
) -> list[int]:
    """The outlines to write: a part at the end of the tree whose seam would paint more background
    pixels than the part has is left out (repeatedly, from the ends inwards); holes always stay."""
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    areas = np.bincount(labels.ravel())
    links: dict[int, dict[int, int]] = defaultdict(dict)
    for a, vertex_a, b, vertex_b in seams:
        cost = _background_on_line(outlines[a][vertex_a], outlines[b][vertex_b], mask)
        links[a][b] = links[b][a] = cost
    kept = set(range(len(outlines)))
    ends = [node for node in kept if len(links[node]) == 1]
    while ends and len(kept) > 1:
        node = ends.pop()
        x, y = outlines[node][0]
        ((neighbour, cost),) = links[node].items()
        if outer[node] and cost > areas[labels[y, x]]:
            kept.discard(node)
            del links[neighbour][node]
            if len(links[neighbour]) == 1:
                ends.append(neighbour)
    return sorted(kept)


def _background_on_line(start: np.ndarray, end: np.ndarray, mask: np.ndarray) -> int:
    """Background pixels on the straight 8-connected line from `start` to `end` ((x, y) pixels)."""
    steps = int(np.abs(end - start).max()) + 1
    xs, ys = (np.rint(np.linspace(start[i], end[i], steps)).astype(np.int64) for i in (0, 1))
    return int((~mask[ys, xs]).sum())


def seam_tree(outlines: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """The seams (outline a, its vertex, outline b, its vertex) of a minimum spanning tree over
    the outlines, each seam the closest pair of vertices of its two outlines (memory linear in the
    vertices: a KD-tree for two outlines, a Delaunay triangulation for more)."""
    if len(outlines) == 1:
        return []
    if len(outlines) == 2:
        first, second = outlines
        distances, nearest = cKDTree(second).query(first)
        index = int(np.argmin(distances))
        return [(0, index, 1, int(nearest[index]))]
    return _spanning_seams(outlines)


def _spanning_seams(outlines: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """The minimum spanning tree of the outlines: the closest pair of vertices across any cut is
    an edge of the Delaunay triangulation of all vertices, so only those edges are candidates."""
    points = np.concatenate(outlines).astype(np.float64)
    owner = np.concatenate([np.full(len(outline), index) for index, outline in enumerate(outlines)])
    offsets = np.concatenate([[0], np.cumsum([len(outline) for outline in outlines])])
    try:
        simplices = Delaunay(points, qhull_options="QJ").simplices
    except QhullError:  # fewer than 3 distinct points in all: every pair is a candidate
        simplices = np.array([[a, b, b] for a in range(len(points)) for b in range(a + 1, len(points))])
    pairs = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
    pairs = pairs[owner[pairs[:, 0]] != owner[pairs[:, 1]]]
    lengths = np.hypot(*(points[pairs[:, 0]] - points[pairs[:, 1]]).T)
    best: dict[tuple[int, int], tuple[float, int, int]] = {}
    for (a, b), length in zip(pairs.tolist(), lengths.tolist()):
        key = (min(owner[a], owner[b]), max(owner[a], owner[b]))
        if key not in best or length < best[key][0]:
            best[key] = (length, a, b)
    keys = list(best)
    weights = [best[key][0] + 1e-9 for key in keys]  # a zero weight would be no edge to csgraph
    graph = coo_matrix((weights, ([k[0] for k in keys], [k[1] for k in keys])), shape=(len(outlines),) * 2)
    tree = minimum_spanning_tree(graph).tocoo()
    seams = []
    for part_a, part_b in zip(tree.row.tolist(), tree.col.tolist()):
        _, a, b = best[(min(part_a, part_b), max(part_a, part_b))]
        seams.append((int(owner[a]), int(a - offsets[owner[a]]), int(owner[b]), int(b - offsets[owner[b]])))
    return seams


def _walk(outlines: list[np.ndarray], seams: list[tuple[int, int, int, int]]) -> np.ndarray:
    """The ring: outline 0 from its first vertex round, at each seam vertex the linked outline
    walked round from its seam vertex back to it, then back over the seam (iteratively: no
    recursion limit on deep trees)."""
    attached: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for part_a, vertex_a, part_b, vertex_b in seams:
        attached[part_a].append((vertex_a, part_b, vertex_b))
        attached[part_b].append((vertex_b, part_a, vertex_a))
    visited = {0}
    out: list[np.ndarray] = []
    stack: list[tuple[int, int, int, list[tuple[int, int, int]]]] = [(0, 0, 0, _children(attached, 0, visited))]
    while stack:
        part, entry, step, children = stack.pop()
        outline = outlines[part]
        while step <= len(outline):
            vertex = (entry + step) % len(outline)
            out.append(outline[vertex])
            pending = [child for child in children if child[0] == vertex]
            if pending:
                _, child, child_entry = pending[0]
                children.remove(pending[0])
                stack.append((part, entry, step, children))
                stack.append((child, child_entry, 0, _children(attached, child, visited)))
                break
            step += 1
    ring = np.array(out, np.int64)
    return ring[:-1] if len(ring) > 1 else ring  # the last vertex is the first again


def _children(
    attached: dict[int, list[tuple[int, int, int]]], part: int, visited: set[int]
) -> list[tuple[int, int, int]]:
    """The seams of `part` to outlines not yet walked (their vertex on `part`, outline, vertex)."""
    found = [link for link in attached[part] if link[1] not in visited]
    visited.update(link[1] for link in found)
    return found
