"""Reads a SQLite write-ahead log (``FILE-wal``) the way SQLite's recovery does, without SQLite.

SQLite replays a WAL up to the first frame that fails its checks (salt, page number, checksum)
and ignores the rest without a word, so a damaged WAL silently loses the transactions after
the damage. `inspect_wal` walks the frames with the same checks and reports what SQLite would
keep and whether committed transactions lie beyond the point where it would stop. The format
is SQLite's documented one (https://www.sqlite.org/fileformat2.html#the_write_ahead_log).

It runs before the journal opens the database, since opening and closing it would make SQLite
fold the valid part into the main file and delete the WAL, evidence included.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = struct.Struct(">IIIIIIII")  # magic, version, page size, checkpoint seq, salt1, salt2, cksum1, cksum2
# page number, database size after a commit (0: not a commit frame), salt1, salt2, cksum1, cksum2
FRAME = struct.Struct(">IIIIII")
MAGIC_LE, MAGIC_BE = 0x377F0682, 0x377F0683  # checksum words little- or big-endian
VERSION = 3007000
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class WalReport:
    """What SQLite would make of a WAL file."""

    exists: bool
    size: int = 0  # bytes
    frames: int = 0  # frames it would replay (up to the last valid commit)
    commits: int = 0  # transactions it would replay
    damage: str | None = None  # why committed transactions would be dropped, or None


def inspect_wal(path: str | Path) -> WalReport:
    """Walk the WAL at ``path`` like SQLite's recovery (an absent file: ``exists=False``)."""
    path = Path(path)
    try:
        f = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return WalReport(exists=False)
    with f:
        size = path.stat().st_size
        header = f.read(HEADER.size)
        if len(header) < HEADER.size:
            return WalReport(True, size)  # no frame can follow a partial header: nothing to lose
        magic, version, page_size, _, salt1, salt2, c1, c2 = HEADER.unpack(header)
        words = "<u4" if magic == MAGIC_LE else ">u4"
        valid_page = page_size >= 512 and page_size <= 65536 and page_size & (page_size - 1) == 0
        if (magic not in (MAGIC_LE, MAGIC_BE) or version != VERSION or not valid_page
                or _checksum(np.frombuffer(header[:24], words), 0, 0) != (c1, c2)):
            damage = "its header is not a valid WAL header" if size > HEADER.size else None
            return WalReport(True, size, damage=damage)
        s1, s2 = c1, c2
        frames = commits = read = 0
        broken_at = 0  # the frame where SQLite would stop (1-based; 0: it reads them all)
        lost = 0  # commit frames of this WAL after that point
        while len(raw := f.read(FRAME.size + page_size)) == FRAME.size + page_size:
            read += 1
            page_no, commit, f_salt1, f_salt2, f1, f2 = FRAME.unpack_from(raw)
            ours = (f_salt1, f_salt2) == (salt1, salt2)
            if broken_at:
                lost += bool(ours and commit)
                continue
            data = np.frombuffer(raw[:8] + raw[FRAME.size:], words)
            if not ours or page_no == 0 or (sums := _checksum(data, s1, s2)) != (f1, f2):
                broken_at = read
                continue
            s1, s2 = sums
            if commit:
                frames, commits = read, commits + 1
        damage = None
        if lost:
            damage = (f"frame {broken_at} fails its checks, and {lost} committed transaction"
                      f"{'s' if lost > 1 else ''} after it would be dropped")
        return WalReport(True, size, frames, commits, damage)


def _checksum(words: np.ndarray, s1: int, s2: int) -> tuple[int, int]:
    """SQLite's WAL checksum of 32-bit ``words`` (pairs), continuing from ``(s1, s2)``.

    SQLite loops ``s1 += x + s2; s2 += y + s1`` over the pairs (x, y), mod 2**32. That is the
    linear map v -> A v + (x, x + y) with A = [[1, 1], [1, 2]], so after m pairs
    v = A^m v0 + sum_k A^(m-1-k) c_k: a few dot products instead of a Python loop per word.
    """
    m = len(words) // 2
    powers = _powers(m)  # (m + 1, 4): A^j as (a, b, c, d), mod 2**32
    x = words[0::2].astype(np.uint64)
    c = np.stack([x, x + words[1::2].astype(np.uint64)])  # (2, m)
    weights = powers[m - 1::-1] if m else powers[:0]  # A^(m-1-k) for k = 0 .. m-1
    with np.errstate(over="ignore"):  # uint64 wraps mod 2**64, a multiple of 2**32
        t1 = int(weights[:, 0] @ c[0] + weights[:, 1] @ c[1])
        t2 = int(weights[:, 2] @ c[0] + weights[:, 3] @ c[1])
    a, b, cc, d = (int(v) for v in powers[m])
    return (a * s1 + b * s2 + t1) & _MASK, (cc * s1 + d * s2 + t2) & _MASK


@functools.lru_cache(maxsize=4)
def _powers(m: int) -> np.ndarray:
    """A^j for j = 0 .. m as rows (a, b, c, d) of [[a, b], [c, d]], entries mod 2**32."""
    out = np.empty((m + 1, 4), np.uint64)
    a, b, c, d = 1, 0, 0, 1
    for j in range(m + 1):
        out[j] = (a, b, c, d)
        a, b, c, d = (a + c) & _MASK, (b + d) & _MASK, (a + 2 * c) & _MASK, (b + 2 * d) & _MASK
    return out


__all__ = ["WalReport", "inspect_wal"]
