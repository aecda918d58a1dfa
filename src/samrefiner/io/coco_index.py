"""A COCO file indexed in one streaming pass, its annotations read per image, its output streamed.

`CocoIndex.build(path)` reads the file in 1 MiB chunks and keeps, per annotation, only where its
text lies in the file (byte offset and length), its image and whether it is a crowd annotation:
21 bytes per annotation instead of the parsed object (about 1.5 kB for a small polygon). The
`images` list and the file's other top-level values (categories, info, ...) are parsed as usual.
A process (a torchrun rank, a `--shard`) then parses only the annotations of the images it
refines (`annotations[index]` reads that annotation's bytes), and `write_json` writes the output
annotation by annotation, never building the whole file in memory.

The values are exactly those of `json.load` of the whole file: each annotation is parsed from its
own bytes with the same decoder, and `write_json` gives the bytes `json.dumps(..., separators=(",",
":"))` of the whole output would. The pass checks what `CocoDataset` needs (the top-level kind,
the lists, each annotation's `image_id` and `segmentation`) with the same messages; on a syntax
error the file is parsed whole once to give `json`'s own message (line and column).
"""

from __future__ import annotations

import codecs
import json
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from samrefiner.errors import InputError
from samrefiner.io.json_files import load_json

CHUNK_BYTES = 1 << 20
NO_INT_ID = -(1 << 63)  # an annotation without a 64-bit integer id
_LOOKAHEAD = 64  # a value ending closer than this to the text held is decoded again with more
_WHITESPACE = " \t\n\r"


class _SyntaxProblem(Exception):
    """The streaming pass met text that is not JSON (the whole-file parse gives the message)."""


class _Scanner:
    """JSON values of a file one after the other, with their byte spans, in bounded memory.

    The bytes are held as latin-1 text (one character per byte, so positions are byte offsets);
    values are decoded with `json`'s decoder from there; text in strings outside ASCII is checked
    as UTF-8 separately and re-decoded from the bytes where its value is used.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.text = ""
        self.base = 0  # file offset of self.text[0]
        self.position = 0  # in self.text
        self.at_end = False
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8")()

    def _read_more(self) -> bool:
        if self.at_end:
            return False
        data = self.handle.read(CHUNK_BYTES)
        self.utf8.decode(data, final=not data)  # UnicodeDecodeError when the file is not UTF-8
        if not data:
            self.at_end = True
            return False
        if self.position:
            self.base += self.position
            self.text = self.text[self.position :]
            self.position = 0
        self.text += data.decode("latin-1")
        return True

    def peek(self) -> str:
        """The next character after whitespace ('' at the end of the file)."""
        while True:
            while self.position < len(self.text) and self.text[self.position] in _WHITESPACE:
                self.position += 1
            if self.position < len(self.text):
                return self.text[self.position]
            if not self._read_more():
                return ""

    def take(self, character: str) -> None:
        if self.peek() != character:
            raise _SyntaxProblem
        self.position += 1

    def value(self) -> tuple[Any, int, int]:
        """The next JSON value (strings as latin-1 text) and its file span [start, end)."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, self.position)
            except json.JSONDecodeError:
                if self._read_more():
                    continue  # the value may go on in the next chunk
                raise _SyntaxProblem from None
            if len(self.text) - end < _LOOKAHEAD and self._read_more():
                continue  # a number cut by the chunk's end ("1" of "1e-7") reads as a shorter one
            start, self.position = self.base + self.position, end
            return value, start, self.base + end

    def raw(self, start: int, end: int) -> bytes:
        """The bytes of a span inside the text held."""
        return self.text[start - self.base : end - self.base].encode("latin-1")

    def items(self) -> Iterator[tuple[Any, int, int]]:
        """The elements of the array that starts here."""
        self.take("[")
        if self.peek() == "]":
            self.position += 1
            return
        while True:
            yield self.value()
            separator = self.peek()
            self.position += 1
            if separator == "]":
                return
            if separator != ",":
                raise _SyntaxProblem


def _check_images(path: Path, images: list[dict[str, Any]], problems: dict[Any, str]) -> None:
    """InputError naming both entries when two images have one id or one file name; a malformed
    id or file name is a problem of that image (its annotations fail, the others are refined)."""
    seen_ids: dict[Any, int] = {}
    seen_names: dict[str, int] = {}
    for number, entry in enumerate(images):
        try:
            first = seen_ids.setdefault(entry["id"], number)
        except TypeError:
            raise InputError(f"{path}: image #{number}: id {json.dumps(entry['id'])} is not an integer") from None
        if first != number:
            raise InputError(_duplicate(path, "images", first, number, entry["id"]))
        problem = _image_entry_problem(entry)
        if problem:
            problems.setdefault(entry["id"], f"{path}: image #{number}: {problem}")
            continue
        first = seen_names.setdefault(entry["file_name"], number)
        if first != number:
            raise InputError(_duplicate(path, "images", first, number, entry["file_name"], "file_name"))


def check_unique(path: Path, kind: str, entries: Any, key: str = "id") -> None:
    """InputError naming the first two dicts of a parsed list `entries` with one value of `key`
    (entries without it, or with an unhashable one, are left to other checks)."""
    seen: dict[Any, int] = {}
    for number, entry in enumerate(entries if isinstance(entries, list) else []):
        value = entry.get(key) if isinstance(entry, dict) else None
        try:
            first = seen.setdefault(value, number) if value is not None else number
        except TypeError:
            continue
        if first != number:
            raise InputError(_duplicate(path, kind, first, number, value, key))


class _Columns:
    """Per annotation: file offset, length, image number, crowd flag; image ids by number; the
    annotations' own ids (to find duplicates) and the malformed values found, by image id."""

    def __init__(self) -> None:
        self.starts, self.lengths, self.image_of, self.crowd = array("q"), array("q"), array("i"), bytearray()
        self.ids: dict[Any, int] = {}
        self.int_ids = array("q")  # per annotation: its id when a 64-bit integer, else NO_INT_ID
        self.other_ids: dict[Any, int] = {}  # any other id (a string, a huge integer) -> its annotation
        self.problems: dict[Any, str] = {}  # image id -> its first malformed value ("<file>: what is wrong")

    def add_id(self, path: Path, index: int, annotation_id: Any) -> None:
        """Remember annotation #index's id (None: it has none; InputError naming both when a
        string id repeats). Called once per annotation, in order."""
        if isinstance(annotation_id, int) and NO_INT_ID < annotation_id < 1 << 63:
            self.int_ids.append(annotation_id)
            return
        self.int_ids.append(NO_INT_ID)
        if annotation_id is None:
            return
        if annotation_id in self.other_ids:
            raise InputError(_duplicate(path, "annotations", self.other_ids[annotation_id], index, annotation_id))
        else:
            self.other_ids[annotation_id] = index

    def check_unique_ids(self, path: Path) -> None:
        """InputError naming two annotations of one integer id, if any. The ids are sorted in
        place and then let go (no copy: the index stays small); only an error reads them again."""
        ids = np.frombuffer(self.int_ids, np.int64)
        ids.sort()
        repeated = np.flatnonzero((ids[1:] == ids[:-1]) & (ids[1:] != NO_INT_ID))
        del ids
        self.int_ids = array("q")
        if len(repeated):
            raise InputError(self._repeated_id(path))

    def _repeated_id(self, path: Path) -> str:
        """The message naming the first two annotations, in file order, that share an integer id."""
        annotations = Annotations(path, np.frombuffer(self.starts, np.int64), np.frombuffer(self.lengths, np.int64))
        seen: dict[int, int] = {}
        for index, annotation in enumerate(annotations):
            annotation_id = annotation.get("id")
            if isinstance(annotation_id, int) and not isinstance(annotation_id, bool):
                first = seen.setdefault(annotation_id, index)
                if first != index:
                    return _duplicate(path, "annotations", first, index, annotation_id)
        raise AssertionError("a repeated id was found, then not")  # pragma: no cover


def _duplicate(path: Path, kind: str, first: int, second: int, value: Any, key: str = "id") -> str:
    return f"{path}: {kind} #{first} and #{second} have the same {key} {json.dumps(value)}: each must be unique"


def id_problem(name: str, value: Any) -> str | None:
    """What is wrong with an id (`image_id`, `id`): it must be an integer or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"{name} {json.dumps(value)} is not an integer (nor a string)"
    return None


def _image_entry_problem(entry: dict[str, Any]) -> str | None:
    name = entry["file_name"]
    if not isinstance(name, str) or not name or "\0" in name:
        return f"file_name {json.dumps(name)} is not a file name"
    return id_problem("id", entry["id"])


class Annotations(Sequence):
    """The file's annotations, each parsed from its bytes when asked for (nothing is kept)."""

    def __init__(self, path: Path, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.path, self.starts, self.lengths = path, starts, lengths

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        with open(self.path, "rb") as handle:
            return self._read(handle, index)

    def _read(self, handle: IO[bytes], index: int) -> dict[str, Any]:
        handle.seek(int(self.starts[index]))
        return json.loads(handle.read(int(self.lengths[index])))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as handle:
            for index in range(len(self)):
                yield self._read(handle, index)


class ByImage(Mapping):
    """Image id -> indices of its non-crowd annotations, in file order; ids in order of their
    first non-crowd annotation (what a dict filled while walking the annotations gives)."""

    def __init__(self, image_ids: list[Any], image_of: np.ndarray, crowd: np.ndarray) -> None:
        kept = np.flatnonzero(~crowd)
        numbers = image_of[kept]
        self._order = kept[np.argsort(numbers, kind="stable")]
        counts = np.bincount(numbers, minlength=len(image_ids))
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        present, first = np.unique(numbers, return_index=True)
        self._number = {image_ids[number]: int(number) for number in present[np.argsort(first, kind="stable")]}

    def __getitem__(self, image_id: Any) -> list[int]:
        number = self._number[image_id]
        return self._order[self._starts[number] : self._starts[number + 1]].tolist()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._number)

    def __len__(self) -> int:
        return len(self._number)

    def __contains__(self, image_id: object) -> bool:
        try:
            return image_id in self._number
        except TypeError:
            return False


class CocoIndex:
    """What `CocoDataset` needs of a COCO file, without its annotations in memory."""

    def __init__(self, path: Path, top: dict[str, Any] | None, columns: _Columns) -> None:
        self.path = path
        self.top = top  # the top-level dict, "annotations" holding None (None for a results list)
        self.annotations = Annotations(
            path, np.frombuffer(columns.starts, np.int64), np.frombuffer(columns.lengths, np.int64)
        )
        crowd = np.frombuffer(bytes(columns.crowd), np.uint8).astype(bool)
        self.by_image = ByImage(list(columns.ids), np.frombuffer(columns.image_of, np.int32), crowd)
        self.problems = columns.problems  # image id -> what is wrong with it or its annotations

    @property
    def is_results(self) -> bool:
        return self.top is None

    @property
    def images(self) -> list[dict[str, Any]]:
        return [] if self.top is None else self.top["images"]

    @classmethod
    def build(cls, path: Path) -> CocoIndex:
        """Index the file at `path` (InputError naming it when it is not a COCO file)."""
        try:
            with open(path, "rb") as handle:
                return cls._scan(path, _Scanner(handle))
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except _SyntaxProblem:
            load_json(path)  # raises json's own message
            raise InputError(f"{path}: not valid JSON") from None
        except (UnicodeDecodeError, OSError) as error:
            raise InputError(f"{path}: cannot be read as JSON ({error})") from None

    @classmethod
    def _scan(cls, path: Path, scanner: _Scanner) -> CocoIndex:
        first, top, columns = scanner.peek(), None, _Columns()
        if first == "[":
            cls._scan_annotations(path, scanner, columns)
        elif first == "{":
            top, columns = cls._scan_object(path, scanner)
        else:
            scanner.value()
            raise (
                _SyntaxProblem if scanner.peek() else InputError(f"{path}: not a COCO annotation file or results list")
            )
        if scanner.peek():
            raise _SyntaxProblem  # text after the value
        columns.check_unique_ids(path)
        if top is not None:
            _check_images(path, top["images"], columns.problems)
        return cls(path, top, columns)

    @classmethod
    def _scan_object(cls, path: Path, scanner: _Scanner) -> tuple[dict[str, Any], _Columns]:
        top: dict[str, Any] = {}
        columns = _Columns()
        has_list = False
        scanner.take("{")
        while scanner.peek() != "}":
            if top:
                scanner.take(",")
            key, start, end = scanner.value()
            if not isinstance(key, str):
                raise _SyntaxProblem
            key = json.loads(scanner.raw(start, end))
            scanner.take(":")
            if key == "annotations" and scanner.peek() == "[":
                columns = _Columns()  # a repeated key: the last value counts, as in json.load
                cls._scan_annotations(path, scanner, columns)
                top[key], has_list = None, True
            else:
                value, start, end = scanner.value()
                raw = scanner.raw(start, end)
                top[key] = value if raw.isascii() else json.loads(raw)  # latin-1 text is UTF-8 text
                has_list = has_list and key != "annotations"
        scanner.position += 1
        if not isinstance(top.get("images"), list) or not has_list:
            raise InputError(f"{path}: a COCO file needs 'images' and 'annotations' lists")
        for entry in top["images"]:
            if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
                raise InputError(f"{path}: every image entry needs 'id' and 'file_name'")
        return top, columns

    @staticmethod
    def _scan_annotations(path: Path, scanner: _Scanner, columns: _Columns) -> None:
        for index, (annotation, start, end) in enumerate(scanner.items()):
            if not isinstance(annotation, dict) or "image_id" not in annotation:
                raise InputError(f"{path}: annotation #{index} has no 'image_id'")
            image_id = annotation["image_id"]
            if isinstance(image_id, str) and not image_id.isascii():
                annotation = json.loads(scanner.raw(start, end))  # the UTF-8 text, not latin-1
                image_id = annotation["image_id"]
            if "segmentation" not in annotation:
                label = f"annotation id {annotation['id']}" if "id" in annotation else f"annotation #{index}"
                raise InputError(f"{path}: {label} has no 'segmentation'")
            try:
                number = columns.ids.setdefault(image_id, len(columns.ids))
            except TypeError:
                raise InputError(f"{path}: annotation #{index}: image_id must be a number or a string") from None
            problem = id_problem("image_id", image_id) or ("id" in annotation and id_problem("id", annotation["id"]))
            if problem:
                columns.problems.setdefault(image_id, f"{path}: annotation #{index}: {problem}")
            columns.add_id(path, index, None if problem else annotation.get("id"))
            columns.starts.append(start)
            columns.lengths.append(end - start)
            columns.image_of.append(number)
            columns.crowd.append(1 if annotation.get("iscrowd") else 0)

    def write_json(self, handle: IO[bytes], refined: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Write the file with the annotations at the given indices replaced, as
        `json.dumps(output, separators=(",", ":"))` would, one annotation at a time.

        The replacements are first spilled to a temporary file (their positions kept in two
        arrays), so memory stays bounded whatever their number and order.
        """
        count = len(self.annotations)
        spilled_at = np.full(count, -1, np.int64)
        spilled_length = np.zeros(count, np.int64)
        with tempfile.TemporaryFile() as spill, open(self.path, "rb") as source:
            for index, annotation in refined:
                text = _dumps(annotation)
                spilled_at[index], spilled_length[index] = spill.tell(), len(text)
                spill.write(text)
            buffer = _Buffered(handle)
            if self.top is None:
                self._write_annotations(buffer, source, spill, spilled_at, spilled_length)
            else:
                buffer.write(b"{")
                for number, (key, value) in enumerate(self.top.items()):
                    buffer.write(b"," * (number > 0) + _dumps(key) + b":")
                    if key == "annotations" and value is None:
                        self._write_annotations(buffer, source, spill, spilled_at, spilled_length)
                    else:
                        buffer.write(_dumps(value))
                buffer.write(b"}")
            buffer.flush()

    def _write_annotations(
        self, buffer: _Buffered, source: IO[bytes], spill: IO[bytes], spilled_at: np.ndarray, spilled_length: np.ndarray
    ) -> None:
        buffer.write(b"[")
        for index in range(len(self.annotations)):
            if index:
                buffer.write(b",")
            if spilled_at[index] >= 0:
                spill.seek(int(spilled_at[index]))
                buffer.write(spill.read(int(spilled_length[index])))
            else:
                buffer.write(_dumps(self.annotations._read(source, index)))
        buffer.write(b"]")


class _Buffered:
    """Collects small writes into 1 MiB ones."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.parts, self.size = handle, [], 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        self.handle.write(b"".join(self.parts))
        self.parts, self.size = [], 0


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")
