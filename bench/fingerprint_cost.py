"""What resume by content costs: fingerprinting an image's input files when it is read, and checking
a finished image's files when a run is resumed, against decoding the image and its masks.

    python3 bench/fingerprint_cost.py                 # DAVIS 2016 frames (JPEG + one PNG mask each)
    python3 bench/fingerprint_cost.py --repeats 5

Per image, CPU seconds (time.process_time, so a loaded machine does not inflate them) of:
- load: `dataset.load(ref)` (decoding the image and its masks), what every run does anyway;
- fingerprint: `fingerprint(dataset.input_files(ref))` (listing, stat and sha256 of each input file,
  read from the page cache right after decoding), what a run adds per image;
- check: `first_change(record, files)` for an unchanged image (one stat per file), what a resume adds
  per finished image; check after a touch: the same file rewritten with the same bytes (stat differs,
  so it is hashed again).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from samrefiner.io.masks import MaskFolders
from samrefiner.run.fingerprints import fingerprint, first_change

SHARED = Path(os.environ.get("SAMREFINER_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def cpu_seconds(action, repeats: int) -> float:
    """The median CPU time of `action()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        action()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared folder (data/davis2016 in it)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    davis = args.shared / "data" / "davis2016"
    dataset = MaskFolders(davis / "JPEGImages", davis / "Annotations", Path(tempfile.mkdtemp()) / "out")
    refs = dataset.refs()
    load = [cpu_seconds(lambda ref=ref: dataset.load(ref), args.repeats) for ref in refs]
    prints = [cpu_seconds(lambda ref=ref: fingerprint(dataset.input_files(ref)), args.repeats) for ref in refs]
    records = {ref.key: fingerprint(dataset.input_files(ref)) for ref in refs}
    check = [
        cpu_seconds(lambda ref=ref: first_change(records[ref.key], dataset.input_files(ref)), args.repeats)
        for ref in refs
    ]
    sizes = [sum(entry["size"] for entry in records[ref.key]) for ref in refs]
    print(f"{len(refs)} DAVIS frames, {statistics.mean(sizes) / 1e3:.0f} kB of input files each on average")
    for name, values in (("load (decode)", load), ("fingerprint", prints), ("resume check, unchanged", check)):
        print(f"  {name:28s} {statistics.median(values) * 1e3:7.2f} ms per image (median)")
    print(f"  fingerprint / load: {statistics.median(prints) / statistics.median(load):.1%}")
    touched_check(records[refs[0].key], dataset.input_files(refs[0]), args.repeats)


def touched_check(record: list[dict], files: list[Path], repeats: int) -> None:
    """The resume check of one image whose files were rewritten with the same bytes (hashed again)."""
    with tempfile.TemporaryDirectory() as folder:
        copies = [Path(shutil.copy(path, Path(folder) / f"{index}{path.suffix}")) for index, path in enumerate(files)]
        entries = fingerprint(copies)
        for copy in copies:
            copy.write_bytes(copy.read_bytes())
        seconds = cpu_seconds(lambda: first_change(entries, copies), repeats)
        assert first_change(entries, copies) is None
    print(f"  {'resume check, touched':28s} {seconds * 1e3:7.2f} ms per image")


if __name__ == "__main__":
    main()
