"""Run identity: which settings made an output, and what a new run may do with an output that exists.

Every `samrefiner refine` writes `<work>/run.json` (work: `<out>/.samrefiner/`, or `<name>.work/`
beside a `.json` output): one flat JSON object of everything that decides the output (package
version, model weights' sha256, every refinement setting, precision, adapter sha256, input format
and paths, `--limit`, the number of `--shard`s, ...). A field is one more keyword of `new_manifest`
(for `samrefiner refine`: one more line in its `run_fields`); `differences` names it by that keyword.
Fields in `INFORMATIVE` are kept for people and not compared (the model as it was named: the same
weights under another path or name are the same model).

What a run does with its output (`claim`):
- nothing there from samrefiner: a fresh output; the manifest is created (exclusively, so
  `--shard` runs started together agree on one manifest and a run with other settings is refused);
- an equal manifest: the same run (another shard, a rank, a rerun or `--resume`): it goes on;
- another manifest: resuming is refused with one line naming the fields that differ (an input file
  that is one input of the whole run, a COCO file, is named as changed), a plain run too; `overwrite`
  removes exactly that run's files (each listed in its journals, see below) and its work folder,
  then writes the new manifest;
- results without a manifest (made before samrefiner wrote manifests): their settings cannot be
  checked and their files are not listed, so every run is refused, `overwrite` included.

Refusals are `RunConflict`s, whose `kind` tells the CLI which of its options resolves them.

Journals: `<work>/written<suffix>.txt`, one per process (shard, torchrun rank), list every file the
run writes outside its work folder (outputs, scores, errors, overlays), each line written before the
file is, so a killed run's half-written image is listed too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from samrefiner import __version__
from samrefiner.errors import InputError
from samrefiner.io.datasets import OutputLayout
from samrefiner.io.digests import file_sha256
from samrefiner.run.outputs import folder_files

MANIFEST_NAME = "run.json"
INFORMATIVE = ("model",)
SPEED_ONLY = ("chunk_size",)  # RefinerConfig fields that change speed, not the output


def new_manifest(**fields: Any) -> dict[str, Any]:
    """The manifest of a run: samrefiner's version and `fields` as JSON values (paths absolute)."""
    return {"samrefiner": __version__, **{name: _plain(value) for name, value in fields.items()}}


def settings_fields(config_values: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields of the refinement settings (RefinerConfig values), speed-only ones left out."""
    return {name: value for name, value in config_values.items() if name not in SPEED_ONLY}


def model_fields(refiner: Any, model_spec: str, adapter: Path | None) -> dict[str, Any]:
    """The manifest fields of a loaded `Refiner`'s model: its name, its weights' sha256, the precision
    it runs in, the adapter file's sha256."""
    return {
        "model": model_spec,
        "model_sha256": weights_sha256(refiner.model.model),
        "precision": precision_name(getattr(refiner.model, "autocast_dtype", None)),
        "adapter_sha256": None if adapter is None else file_sha256(adapter),
    }


def weights_sha256(module: Any) -> str:
    """sha256 over a torch module's state dict (names, dtypes, shapes and bytes, by name): exact for any
    source (checkpoint file, transformers folder, Hugging Face id) at one pass over the weights."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{values.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(values.view(torch.uint8).numpy())
    return digest.hexdigest()


def precision_name(dtype: Any) -> str:
    """The precision the model really runs in ("auto" resolved): fp32, bf16 or fp16."""
    return {None: "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(
        None if dtype is None else str(dtype), str(dtype)
    )


def manifest_path(layout: OutputLayout) -> Path:
    return layout.work_dir / MANIFEST_NAME


class RunConflict(InputError):
    """An output a run may not take as it is; `kind` says what would resolve it: "resume" (the same
    settings as the run there), "overwrite" (replacing that run), "unusable" (another location)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def read_manifest(layout: OutputLayout) -> dict[str, Any] | None:
    path = manifest_path(layout)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunConflict(f"{path}: not a readable run manifest ({error})", "unusable") from None


def file_fields(**files: Path | None) -> dict[str, str | None]:
    """`<name>_sha256` for each input file that is one input of the whole run (a COCO file, a
    data.yaml): its digest, or None when not given. Beside a `<name>` path field, a change is
    described as that file having changed."""
    return {f"{name}_sha256": None if path is None else file_sha256(path) for name, path in files.items()}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'field (old -> new)' for every compared field whose value differs (a missing field is null);
    'PATH changed since (old -> new)' for the digest of an input file whose path is the same."""
    names = [name for name in {**old, **new} if name not in INFORMATIVE]
    return [_difference(name, old, new) for name in names if old.get(name) != new.get(name)]


def _difference(name: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    values = f"({_short(old.get(name))} -> {_short(new.get(name))})"
    path = new.get(name.removesuffix("_sha256"))
    if name.endswith("_sha256") and isinstance(path, str) and old.get(name.removesuffix("_sha256")) == path:
        return f"{path} changed since {values}"
    return f"{name} {values}"


def claim(
    layout: OutputLayout, manifest: dict[str, Any], *, resume: bool, overwrite: bool, partial: bool = False
) -> None:
    """Make `layout` this run's output, or refuse (RunConflict, one line); see the module docstring.

    `partial`: only refuse, comparing the fields `manifest` has (a check before the model is loaded);
    nothing is written or removed."""
    existing = read_manifest(layout)
    if existing is None and _has_results(layout):
        raise RunConflict(
            f"{layout.out}: holds results of a samrefiner run without a run manifest (an older version): their "
            "settings cannot be checked nor their files listed",
            "unusable",
        )
    if existing is not None:
        changed = differences({name: existing.get(name) for name in manifest} if partial else existing, manifest)
        if not changed:
            return
        if resume:
            raise RunConflict(f"{layout.out}: the run there has other settings: {', '.join(changed)}", "resume")
        if not overwrite:
            raise RunConflict(f"{layout.out}: holds another run's results ({', '.join(changed)})", "overwrite")
    if partial:
        return
    if existing is not None:
        remove_run(layout)
    _create(layout, manifest)


def check_same(layout: OutputLayout, manifest: dict[str, Any]) -> None:
    """InputError unless `layout` holds an equal manifest (a torchrun rank after rank 0 claimed it)."""
    existing = read_manifest(layout)
    changed = ["no run.json"] if existing is None else differences(existing, manifest)
    if changed:
        raise InputError(
            f"{manifest_path(layout)}: this process's settings differ from the run's: {', '.join(changed)}"
        )


def remove_run(layout: OutputLayout) -> None:
    """Remove every file the journals list (and the folders inside the output they leave empty), then
    the work folder."""
    base = Path(os.path.abspath(layout.work_dir.parent))
    for path in journaled_files(layout):
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if base not in folder.parents or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
    shutil.rmtree(layout.work_dir, ignore_errors=True)


class Journal:
    """This process's list of the files it writes outside the work folder (`<work>/written<suffix>.txt`)."""

    def __init__(self, layout: OutputLayout, suffix: str = "") -> None:
        self.work_dir = layout.work_dir
        self.path = layout.work_dir / f"written{suffix}.txt"
        self._listed: set[Path] = set()

    def add(self, path: Path) -> None:
        """List `path` (before it is written); files inside the work folder go with it anyway."""
        path = Path(os.path.abspath(path))
        if path in self._listed or self.work_dir.resolve() in path.resolve().parents:
            return
        self._listed.add(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(_relative(path, self.work_dir.parent) + "\n")


def journaled_files(layout: OutputLayout) -> list[Path]:
    """Every file any journal of `layout` lists, as absolute paths (relative entries are under the work
    folder's parent)."""
    base = Path(os.path.abspath(layout.work_dir.parent))
    files: dict[Path, None] = {}
    for journal in sorted(layout.work_dir.glob("written*.txt")):
        for line in journal.read_text(encoding="utf-8").splitlines():
            if line:
                files[base / line] = None  # an absolute line stays absolute
    return list(files)


def _has_results(layout: OutputLayout) -> bool:
    records = layout.work_dir / "records"
    return (records.is_dir() and any(records.iterdir())) or layout.scores_path.exists()


def _create(layout: OutputLayout, manifest: dict[str, Any]) -> None:
    """Write the manifest unless one appeared meanwhile (another shard): then it must be equal."""
    path = manifest_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)  # atomic create-if-absent
    except FileExistsError:
        check_same(layout, manifest)
    finally:
        tmp.unlink(missing_ok=True)


def _relative(path: Path, base: Path) -> str:
    base = Path(os.path.abspath(base))
    return path.relative_to(base).as_posix() if base in path.parents else str(path)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value.resolve())
    return value


def _short(value: Any) -> str:
    text = json.dumps(value)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256
    return text if len(text) <= 60 else "..." + text[-57:]


def owns(layout: OutputLayout, location: Any) -> bool:
    """Whether the output `location` (a samrefiner.run.outputs.Location) of a run into `layout` was
    written by samrefiner: the output itself and its work folder when `layout` holds a work folder
    (`claim` then decides what the run may do there), any other path (errors file, overlays) when
    the journals there list every file in it."""
    if not layout.work_dir.is_dir():
        return False
    path = Path(os.path.abspath(location.path))
    if path in (Path(os.path.abspath(layout.out)), Path(os.path.abspath(layout.work_dir))):
        return True
    files = folder_files(path) if location.folder else {path}
    return files <= set(journaled_files(layout))
