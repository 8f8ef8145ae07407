#!/usr/bin/env python3
# Writes tests/fuzz/seeds: the IDX reader's fuzz seed corpus, replayed by the test binary ("idx:
# fuzz seed ..."). A name says what the reader must do with the file: ok-AxBxC[.gz] loads with
# those dims (data bytes i % 251), err-WORD-...[.gz] fails with a message containing WORD. The
# files are tiny; run this again (python3 tests/fuzz/make_seeds.py) after changing it.
import gzip
import os
import struct
import zlib

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def idx(dims, data=None, dtype=0x08):
    """An IDX file: magic 00 00 dtype ndim, big-endian dims, then the data bytes."""
    size = 1
    for d in dims:
        size *= d
    if data is None:
        data = bytes(i % 251 for i in range(size))
    return bytes([0, 0, dtype, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def gz(b):
    return gzip.compress(b, mtime=0)


def bad_crc(b):
    """gzip of b with its CRC-32 trailer flipped: zlib reports 'incorrect data check'."""
    g = bytearray(gz(b))
    g[-8] ^= 0xFF
    return bytes(g)


def bad_block(b):
    """A gzip header followed by a deflate block of the reserved type 3: 'invalid block type'."""
    return gz(b)[:10] + b"\xff\xff\xff\xff"


SEEDS = {
    "ok-7.idx": idx([7]),
    "ok-10.idx.gz": gz(idx([10])),
    "ok-3x4.idx": idx([3, 4]),
    "ok-2x3x4.idx": idx([2, 3, 4]),
    "ok-2x3x4.idx.gz": gz(idx([2, 3, 4])),
    "ok-2x2x1x3.idx.gz": gz(idx([2, 2, 1, 3])),
    "err-truncated-data.idx": idx([2, 3, 4])[:-4],
    "err-truncated-data.idx.gz": gz(idx([2, 3, 4])[:-4]),
    "err-truncated-dims.idx": idx([2, 3, 4])[:10],
    "err-truncated-header.idx": b"\x00\x00",
    "err-truncated-16GiB.idx": idx([65536, 65536, 4], b""),
    "err-truncated-16GiB.idx.gz": gz(idx([65536, 65536, 4], b"\x00" * 64)),
    "err-magic.idx": b"\x1f\x00" + idx([4])[2:],
    "err-unsigned-float.idx": idx([2], b"\x00" * 8, dtype=0x0D),
    "err-dimensions-0.idx": b"\x00\x00\x08\x00",
    "err-dimensions-5.idx": idx([1, 1, 1, 1, 1]),
    "err-implausible-zero.idx": idx([3, 0]),
    "err-implausible-huge.idx": idx([65536, 65536, 65536], b""),
    "err-extra.idx": idx([3]) + b"\x07",
    "err-corrupt-crc.idx.gz": bad_crc(idx([5])),
    "err-corrupt-block.idx.gz": bad_block(idx([5])),
}

if __name__ == "__main__":
    for name, b in SEEDS.items():
        if name.startswith("err-corrupt"):
            try:
                zlib.decompress(b, 31)
                raise SystemExit(name + ": zlib reads it without error")
            except zlib.error:
                pass
    os.makedirs(HERE, exist_ok=True)
    for old in os.listdir(HERE):
        os.remove(os.path.join(HERE, old))
    for name, b in SEEDS.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(b)
    print(f"{len(SEEDS)} seeds, {sum(map(len, SEEDS.values()))} bytes, in {HERE}")
