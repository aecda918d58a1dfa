"""`samrefiner adapt`: train a SAMRefiner++ IoU adapter on a dataset's coarse masks (no labels).

    samrefiner adapt --model SPEC --images DIR (--masks DIR | --label-maps DIR | --coco FILE)
                     --out adapter.safetensors [--cache DIR] [--device D] [training options]

Inputs are read exactly as `samrefiner refine` reads them (label maps: the split-then-merge
regions). Images that cannot be read are reported on stderr and skipped. Use the result with
`samrefiner refine --adapter adapter.safetensors` or `Refiner(model, config, adapter=path)`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from samrefiner.commands.app import app
from samrefiner.commands.options import (
    CocoOption,
    DeviceOption,
    ImagesOption,
    LabelMapsOption,
    MasksOption,
    ModelOption,
    ProgressOption,
    check_apart,
    chosen_input,
)
from samrefiner.errors import InputError
from samrefiner.io.formats import open_dataset
from samrefiner.run.outputs import Location, check_locations, folder_files

TRAINING_PANEL = "Training (AdaptConfig)"
# The dataset readers are built for `refine` and want an output location; adapt never writes through them.
_READ_ONLY_OUTPUT = Path("samrefiner-adapt-reads-only.json")


AdapterFileOption = Annotated[Path, typer.Option("--out", help="The adapter file to write (.safetensors).")]
CacheOption = Annotated[
    Path | None, typer.Option("--cache", help="Keep image embeddings here and reuse them on later runs.")
]
ImageLimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Use at most N images.")]
RankOption = Annotated[int, typer.Option(min=1, help="LoRA rank.", rich_help_panel=TRAINING_PANEL)]
AlphaOption = Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / rank).", rich_help_panel=TRAINING_PANEL)]
MarginOption = Annotated[float, typer.Option(help="Ranking-loss margin m.", rich_help_panel=TRAINING_PANEL)]
LrOption = Annotated[float, typer.Option(min=0.0, help="SGD learning rate.", rich_help_panel=TRAINING_PANEL)]
MomentumOption = Annotated[float, typer.Option(min=0.0, help="SGD momentum.", rich_help_panel=TRAINING_PANEL)]
WeightDecayOption = Annotated[float, typer.Option(min=0.0, help="SGD weight decay.", rich_help_panel=TRAINING_PANEL)]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Coarse masks per step.", rich_help_panel=TRAINING_PANEL)]
EpochsOption = Annotated[int, typer.Option(min=1, help="Passes over the coarse masks.", rich_help_panel=TRAINING_PANEL)]
MilestonesOption = Annotated[
    str,
    typer.Option(
        help="Steps at which the learning rate is multiplied by --lr-gamma, comma-separated.",
        rich_help_panel=TRAINING_PANEL,
    ),
]
LrGammaOption = Annotated[
    float, typer.Option(help="Learning-rate factor at each milestone.", rich_help_panel=TRAINING_PANEL)
]
PromptOption = Annotated[
    str,
    typer.Option(help="Prompt of the training decodes: box, point or box+point.", rich_help_panel=TRAINING_PANEL),
]
SeedOption = Annotated[
    int, typer.Option(help="Seed of the LoRA initialisation and the sample order.", rich_help_panel=TRAINING_PANEL)
]


@app.command("adapt")
def adapt_command(
    images: ImagesOption,
    out: AdapterFileOption,
    masks: MasksOption = None,
    label_maps: LabelMapsOption = None,
    coco: CocoOption = None,
    model: ModelOption = "vit_h",
    device: DeviceOption = "auto",
    cache: CacheOption = None,
    limit: ImageLimitOption = None,
    progress: ProgressOption = True,
    rank: RankOption = 4,
    alpha: AlphaOption = 4.0,
    margin: MarginOption = 0.02,
    lr: LrOption = 0.01,
    momentum: MomentumOption = 0.9,
    weight_decay: WeightDecayOption = 5e-4,
    batch_size: BatchSizeOption = 5,
    epochs: EpochsOption = 1,
    milestones: MilestonesOption = "60,100",
    lr_gamma: LrGammaOption = 0.1,
    prompt: PromptOption = "box",
    seed: SeedOption = 0,
) -> None:
    """Train a rank-4 LoRA on SAM's IoU head so that it ranks candidates as the coarse masks do."""
    import torch

    from samrefiner.adapt import AdaptConfig, collect_samples, train_adapter
    from samrefiner.embedding_cache import EmbeddingCache
    from samrefiner.models import load_model

    config = AdaptConfig(
        rank=rank,
        alpha=alpha,
        margin=margin,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        epochs=epochs,
        milestones=parse_milestones(milestones),
        lr_gamma=lr_gamma,
        prompt=prompt,
        seed=seed,
    )
    kind, source = chosen_input(images, masks=masks, label_maps=label_maps, coco=coco)
    dataset = open_dataset(kind, source, images, _READ_ONLY_OUTPUT)
    check_outputs([path for path in (images, masks, label_maps, coco) if path is not None], out, cache)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sam = load_model(model, device=device)
    samples = collect_samples(
        sam, _readable(dataset, limit), config.prompt, EmbeddingCache(sam, cache).encode, progress
    )
    result = train_adapter(sam, samples, config, progress=progress)
    result.adapter.save(out)
    typer.echo(f"{_trained(result, samples.skipped)}; wrote {out}")


def check_outputs(inputs: list[Path], out: Path, cache: Path | None) -> None:
    """The adapter file and the cache folder: apart from the inputs, writable, new or samrefiner's."""
    check_apart(inputs, [("--out", out), *([("--cache", cache)] if cache else [])])
    check_locations(
        [Location("--out", out, folder=False), *([Location("--cache", cache, folder=True)] if cache else [])],
        is_ours=is_adapt_output,
        remedy="choose another path (an adapter file or an embedding cache samrefiner wrote can be written again)",
    )


def is_adapt_output(location: Location) -> bool:
    """An IoU adapter file (its format in the metadata), or a folder of embedding-cache entries."""
    from samrefiner.adapter import FORMAT, read_safetensors

    if location.folder:
        return all(path.name.endswith(".safetensors") for path in folder_files(location.path))
    try:
        _, metadata = read_safetensors(location.path)
    except Exception:  # noqa: BLE001  (anything unreadable is not an adapter)
        return False
    return metadata.get("format") == FORMAT


def parse_milestones(text: str) -> tuple[int, ...]:
    """'60,100' -> (60, 100); '' -> () (no decay)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--milestones {text}: expected comma-separated step numbers, e.g. 60,100") from None


def _readable(dataset, limit: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image, coarse masks) of each image that loads; a failure is one line on stderr."""
    from samrefiner.run.failures import describe_failure
    from samrefiner.run.loader import load_in_order

    refs = dataset.refs()[:limit]
    for ref, sample in load_in_order(dataset, refs):
        if isinstance(sample, Exception):
            print(f"samrefiner: skipped {describe_failure(ref, sample)}", file=sys.stderr)
            continue
        yield sample.image, sample.masks


def _trained(result: Any, skipped: int) -> str:
    """What training did, in one line."""
    return (
        f"{result.samples} coarse masks ({skipped} skipped), {result.steps} steps: "
        f"ranking loss {result.before.loss:.4f} -> {result.after.loss:.4f}, "
        f"top-1 agreement with coarse-mask IoU {result.before.agreement:.1%} -> {result.after.agreement:.1%}"
    )
