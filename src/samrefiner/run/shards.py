"""Sharding a dataset run: several processes (SLURM array tasks, torchrun ranks) split one dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samrefiner.errors import InputError
from samrefiner.io.datasets import SampleRef


@dataclass(frozen=True)
class Shard:
    """Every `count`-th image starting at the `index`-th (0-based), e.g. a SLURM array task."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'K/N' -> Shard(K, N) with 0 <= K < N (InputError naming `text` otherwise)."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise InputError(f"{text}: expected K/N, e.g. 0/4") from None
        if not 0 <= index < count:
            raise InputError(f"{text}: K must be in 0..N-1")
        return cls(index, count)

    def select(self, refs: list[SampleRef]) -> list[SampleRef]:
        return refs[self.index :: self.count]

    @property
    def suffix(self) -> str:
        """A file-name suffix that keeps the shards' own files apart ('' when unsharded)."""
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"


def select(refs: list[SampleRef], shard: Shard, limit: int | None) -> list[SampleRef]:
    """This shard's images, at most `limit` of them."""
    chosen = shard.select(refs)
    return chosen if limit is None else chosen[:limit]


def shard_path(path: Path, shard: Shard) -> Path:
    """`path` with the shard's suffix before its extension (unchanged when unsharded)."""
    return path.with_name(path.stem + shard.suffix + path.suffix) if shard.suffix else path
