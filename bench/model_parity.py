"""Parity of the SAM backend with the reference fixtures, and decode/upscale time per object.

    python3 bench/model_parity.py [--shared ../shared]

Loads fixtures/sam_reference/reduced_sam.pth through `load_model`, encodes every image once, decodes
the recorded prompts of every one-iteration case, and prints the worst differences over all cases.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from samrefiner import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    reference = args.shared / "fixtures" / "sam_reference"
    model = load_model(reference / "reduced_sam.pth")
    cases = [case for case in json.loads((reference / "index.json").read_text()) if case["iters"] == 1]

    encodings, image_refs = {}, {}
    embedding_diff = logit_diff = iou_diff = 0.0
    equal_pixels = total_pixels = objects = 0
    decode_seconds = upscale_seconds = 0.0
    for case in cases:
        name = case["image_arrays"]
        if name not in encodings:
            image_refs[name] = np.load(reference / name)
            encodings[name] = model.encode(image_refs[name]["image_rgb"])
            reference_embeddings = torch.from_numpy(image_refs[name]["embeddings"].astype(np.float32))
            embedding_diff = max(embedding_diff, (encodings[name].embeddings - reference_embeddings).abs().max().item())
        run = np.load(reference / f"{case['case']}.npz")
        start = time.perf_counter()
        decoded = model.decode(
            encodings[name],
            run["points_orig"],
            run["point_labels"],
            run["boxes_orig"],
            torch.from_numpy(run["mask_inputs"].astype(np.float32)),
        )
        decode_seconds += time.perf_counter() - start
        best = decoded.iou_scores.argmax(dim=1)
        start = time.perf_counter()
        model.upscale(decoded.low_res_logits[torch.arange(len(best)), best][:, None], encodings[name])
        upscale_seconds += time.perf_counter() - start
        objects += len(best)

        reference_logits = torch.from_numpy(run["low_res_logits"].astype(np.float32))
        logit_diff = max(logit_diff, (decoded.low_res_logits - reference_logits).abs().max().item())
        iou_diff = max(iou_diff, (decoded.iou_scores - torch.from_numpy(run["iou_predictions"])).abs().max().item())
        shape = tuple(run["masks_shape"])
        reference_masks = np.unpackbits(run["masks_bits"])[: int(np.prod(shape))].reshape(shape).astype(bool)
        masks = (model.upscale(decoded.low_res_logits, encodings[name]) > 0).numpy()
        equal_pixels += int((masks == reference_masks).sum())
        total_pixels += masks.size

    print(f"cases: {len(cases)} ({len(encodings)} images, {objects} objects)")
    print(f"embeddings max |diff|: {embedding_diff:.2e}")
    print(f"low-res logits max |diff|: {logit_diff:.2e}")
    print(f"IoU predictions max |diff|: {iou_diff:.2e}")
    print(f"full-size mask pixels equal: {100 * equal_pixels / total_pixels:.4f} %")
    print(f"decode: {1000 * decode_seconds / objects:.1f} ms/object (3 candidates, default chunks)")
    print(f"upscale of the chosen mask: {1000 * upscale_seconds / objects:.1f} ms/object")


if __name__ == "__main__":
    main()
