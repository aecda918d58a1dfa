"""How sensitive the HQ-SAM five-pass cascade of one fixture case is to float noise in the features.

    python3 bench/hq_cascade_sensitivity.py [--shared ../shared] [--case coco_stuff_3] [--seeds 4]

Runs the case's five passes (reduced HQ model, lambda = 0) from our own encoding, from our encoding
with the early ViT features (`interm_embeddings`) perturbed by Gaussian noise of 1e-4 (one run per
seed), and from the fixture's stored float16 features, and prints each object's pixel agreement with
the reference's final masks. Objects that change between these runs sit on a knife edge: float32
differences between two correct implementations decide which end state the cascade reaches.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from samrefiner import load_model
from samrefiner.models.sam_hq import INTERM_KEY
from samrefiner.refine import Refiner, RefinerConfig

NOISE = 1e-4


def unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(tuple(shape)).astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--case", default="coco_stuff_3")
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    fixtures = args.shared / "fixtures"
    model = load_model(fixtures / "hq_reference" / "reduced_sam.pth")
    stored = np.load(fixtures / "hq_reference" / f"{args.case}__image.npz")
    shared = np.load(fixtures / str(stored["image_arrays_in"]))
    coarse = unpack(shared["coarse_bits"], shared["coarse_shape"])
    run = np.load(fixtures / "hq_reference" / f"{args.case}__iters5_margin0.0.npz")
    reference = unpack(run["refined_bits"], run["refined_shape"])
    refiner = Refiner(model, RefinerConfig(iterations=5))

    ours = model.encode(shared["image_rgb"])
    interm = ours.features[INTERM_KEY]
    variants = {"our encoding": ours}
    for seed in range(args.seeds):
        noise = torch.randn(interm.shape, generator=torch.Generator().manual_seed(seed)) * NOISE
        perturbed = dataclasses.replace(ours, features={INTERM_KEY: interm + noise})
        variants[f"interm + N(0, {NOISE:g}) seed {seed}"] = perturbed
    variants["fixture float16 features"] = dataclasses.replace(
        ours,
        embeddings=torch.from_numpy(stored["embeddings"].astype(np.float32)),
        features={INTERM_KEY: torch.from_numpy(stored["interm_embeddings"].astype(np.float32))},
    )
    print(f"{args.case}, 5 passes: pixel agreement with the reference per object")
    for label, encoding in variants.items():
        masks = refiner.refine_encoded(encoding, coarse).masks
        agreement = (masks == reference).reshape(len(masks), -1).mean(axis=1)
        print(f"{label:34s} " + " ".join(f"{value:.4f}" for value in agreement))


if __name__ == "__main__":
    main()
