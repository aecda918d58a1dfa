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
holes alike, joined into ONE closed ring: the outlines are the nodes of a minimum spanning tree
whose edges (seams) are straight lines between vertices of two outlines, and the ring walks every
outline once, going out over each seam and coming back over it. A reader paints each seam as a
1-pixel line (`fillPoly` draws every polygon edge with OpenCV's 8-connected line), so a seam costs
the background pixels on its line (a stretch over the mask, its own parts or another's, costs
nothing): the tree is the one of least such cost over the candidate seams (`seam_tree`). A hole
stays a hole (even-odd rule; its seam usually runs over the object and costs nothing).

Parts left out: seen from the largest part, each seam of the tree leads to a branch (the outlines
beyond it). The branches left out of the ring are those that give the highest IoU between what a
reader fills and the mask, A / (N + C): A the pixels of the parts kept, N the mask's, C the
pixels the seams kept paint. At that IoU, a branch is left out (whole) exactly when its parts have
fewer pixels than IoU times the pixels of its seams (its own and those kept inside it), except
that a branch holding a hole's outline is always kept (leaving a hole without its part out would
fill the hole). A part of 20 pixels 100 pixels away from an object read back at IoU 0.99 is left
out; one of 200 pixels is not. Filled by `fill`, the ring gives the mask back except for the seam
pixels and the parts left out.

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
Seam = tuple[int, int, int, int]  # outline a, its vertex index, outline b, its vertex index


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
    """One closed ring (M x 2 int pixel (x, y) vertices) through the outlines of `mask` but the
    branches left out (see the module docstring); None for an empty mask."""
    mask = np.asarray(mask, bool)
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outlines = [contour.reshape(-1, 2).astype(np.int64) for contour in contours]
    if not outlines:
        return None
    seams, costs = seam_tree(outlines, mask)
    kept = _worth_joining(outlines, hierarchy[0][:, 3] < 0, seams, costs, mask)
    if len(kept) < len(outlines):
        index = {old: new for new, old in enumerate(kept)}
        outlines = [outlines[old] for old in kept]
        seams = [(index[a], va, index[b], vb) for a, va, b, vb in seams if a in index and b in index]
    return _walk(outlines, seams)


def _worth_joining(
    outlines: list[np.ndarray], outer: np.ndarray, seams: list[Seam], costs: list[int], mask: np.ndarray
) -> list[int]:
    """The outlines to write: all but the branches left out (module docstring), the tree walked
    from the largest part. The highest IoU A / (N + C) (A pixels kept of the N, C painted by the
    seams kept) by Dinkelbach's iteration: keep the branches worth keeping at the ratio reached so
    far (`_left_out`), which raises the ratio, until it rises no more."""
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    areas = np.bincount(labels.ravel())
    pixels = [int(areas[labels[y, x]]) if outer[node] else 0 for node, (x, y) in enumerate(o[0] for o in outlines)]
    links: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (a, _, b, _), cost in zip(seams, costs, strict=True):
        links[a].append((b, cost))
        links[b].append((a, cost))
    root = int(np.argmax(pixels))
    order, up = [root], {root: (-1, 0)}  # breadth first: every outline after the one it hangs from
    for node in order:
        for neighbour, cost in links[node]:
            if neighbour not in up:
                up[neighbour] = (node, cost)
                order.append(neighbour)
    pinned = {-1}  # the branches that hold a hole's outline
    for node in (node for node in order if not outer[node]):
        while node not in pinned:
            pinned.add(node)
            node = up[node][0]
    total, dropped, ratio = sum(pixels), set(), -1.0
    while True:
        kept = [node for node in order if node not in dropped]
        reached = sum(pixels[node] for node in kept) / (total + sum(up[node][1] for node in kept))
        if reached <= ratio:
            return sorted(kept)
        ratio, dropped = reached, _left_out(order, up, pixels, pinned, reached)


def _left_out(
    order: list[int], up: dict[int, tuple[int, int]], pixels: list[int], pinned: set[int], ratio: float
) -> set[int]:
    """The outlines in branches whose pixels are fewer than `ratio` times the pixels of the seams
    that join them (their own and those kept inside), unless pinned; `order` has parents first."""
    net = [float(value) for value in pixels]
    dropped = set()
    for node in reversed(order[1:]):
        parent, cost = up[node]
        if net[node] < ratio * cost and node not in pinned:
            dropped.add(node)
        else:
            net[parent] += net[node] - ratio * cost
    for node in order[1:]:  # what hangs from a dropped outline goes with it
        if up[node][0] in dropped:
            dropped.add(node)
    return dropped


def seam_tree(outlines: list[np.ndarray], mask: np.ndarray) -> tuple[list[Seam], list[int]]:
    """The seams of the minimum spanning tree over the outlines whose edges weigh what they paint
    outside `mask` (`background_on_lines`; the shorter among equals), each the cheapest candidate
    between its two outlines, and their costs in pixels."""
    if len(outlines) == 1:
        return [], []
    points = np.concatenate(outlines)
    owner = np.concatenate([np.full(len(outline), index) for index, outline in enumerate(outlines)])
    pairs, costs, lengths = _cheapest_per_pair(_candidate_pairs(outlines, points, owner), points, owner, mask)
    weights = costs + 1e-6 * (1 + lengths)  # a zero weight would be no edge to csgraph
    ends = np.sort(owner[pairs], axis=1)
    graph = coo_matrix((weights, (ends[:, 0], ends[:, 1])), shape=(len(outlines),) * 2)
    tree = minimum_spanning_tree(graph).tocoo()
    chosen = set(zip(tree.row.tolist(), tree.col.tolist()))
    offsets = np.concatenate([[0], np.cumsum([len(outline) for outline in outlines])])
    seams, seam_costs = [], []
    for (a, b), (owner_a, owner_b), cost in zip(pairs.tolist(), ends.tolist(), costs.tolist()):
        if (owner_a, owner_b) in chosen:
            seams.append((int(owner[a]), int(a - offsets[owner[a]]), int(owner[b]), int(b - offsets[owner[b]])))
            seam_costs.append(int(cost))
    return seams, seam_costs


def _candidate_pairs(outlines: list[np.ndarray], points: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """K x 2 indices into `points` of candidate seams, in memory linear in the vertices: for two
    outlines each vertex of the first and its nearest on the second (a KD-tree); for more, the
    edges between outlines of the Delaunay triangulation of all vertices (it holds the closest pair
    across any cut)."""
    if len(outlines) == 2:
        _, nearest = cKDTree(outlines[1]).query(outlines[0])
        return np.stack([np.arange(len(outlines[0])), len(outlines[0]) + nearest], axis=1)
    try:
        simplices = Delaunay(points.astype(np.float64), qhull_options="QJ").simplices
    except QhullError:  # fewer than 3 distinct points in all: every pair is a candidate
        simplices = np.array([[a, b, b] for a in range(len(points)) for b in range(a + 1, len(points))])
    pairs = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
    return pairs[owner[pairs[:, 0]] != owner[pairs[:, 1]]]


def _cheapest_per_pair(
    pairs: np.ndarray, points: np.ndarray, owner: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair of outlines, the candidate whose line paints the fewest background pixels (then the
    shortest), with that cost and its length. Only candidates at most sqrt(2) times (+ 2 pixels) as
    long as the pair's shortest are costed: a line of chessboard length L is L to sqrt(2) L long,
    so they hold the line of fewest pixels (the cheapest where all of it crosses background)."""
    lengths = np.hypot(*(points[pairs[:, 0]] - points[pairs[:, 1]]).T)
    keys = np.sort(owner[pairs], axis=1) @ np.array([int(owner.max()) + 1, 1])
    order = np.argsort(keys, kind="stable")
    pairs, lengths, keys = pairs[order], lengths[order], keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    shortest = np.repeat(np.minimum.reduceat(lengths, starts), np.diff(np.r_[starts, len(keys)]))
    near = lengths <= np.sqrt(2) * shortest + 2
    pairs, lengths, keys = pairs[near], lengths[near], keys[near]
    costs = background_on_lines(points[pairs[:, 0]], points[pairs[:, 1]], mask)
    best = np.lexsort((lengths, costs, keys))
    best = best[np.r_[True, keys[best][1:] != keys[best][:-1]]]
    return pairs[best], costs[best], lengths[best]


def background_on_lines(starts: np.ndarray, ends: np.ndarray, mask: np.ndarray, chunk: int = 2**16) -> np.ndarray:
    """Per line from `starts` to `ends` (K x 2 int (x, y) pixels), the background pixels of `mask` on
    it as `fillPoly` paints a polygon edge (OpenCV's 8-connected line, drawn from its left end: one
    pixel per step along the longer axis, the other axis rounded half towards the left end);
    about `chunk` pixels at a time."""
    swap = (ends[:, 0] < starts[:, 0])[:, None]
    first, delta = np.where(swap, ends, starts), np.where(swap, starts - ends, ends - starts)
    steep, down = np.abs(delta[:, 1]) > delta[:, 0], np.where(delta[:, 1] < 0, -1, 1)
    major, minor = np.abs(delta).max(axis=1), np.abs(delta).min(axis=1)
    before = np.cumsum(major + 1) - (major + 1)  # pixels of the lines before each line
    costs = np.zeros(len(major), np.int64)
    low = 0
    while low < len(major):
        high = max(int(np.searchsorted(before, before[low] + chunk, side="left")), low + 1)
        line = np.repeat(np.arange(low, high), major[low:high] + 1)
        step = np.arange(len(line)) - (before[line] - before[low])
        span = np.maximum(major[line], 1)
        across = (2 * minor[line] * step + span - 1) // (2 * span)
        xs = first[line, 0] + np.where(steep[line], across, step)
        ys = first[line, 1] + down[line] * np.where(steep[line], step, across)
        costs[low:high] = np.bincount(line - low, weights=~mask[ys, xs], minlength=high - low)
        low = high
    return costs


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
