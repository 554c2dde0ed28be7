"""The compressed payload's byte layout: blocks, records, their sizes, and block-aligned slices.

A payload of an n-element vector is ``ceil(n / block)`` records laid end to end, one per block of
consecutive elements, with no header: a record is the block's packed codes followed by its scale
(little-endian float32). The last block may hold fewer than ``block`` elements; its record has the
full size and its unused codes are those of zeros. So a payload's length is a pure function of n
and the codec, and block j's record is bytes ``[j * record, (j + 1) * record)``: a reader can
stream records in order, and a combine share reads only its slice's records.

Slices: a block never straddles a shard boundary when every boundary except the vector's end is a
multiple of the block. Then compressing ``v[lo:hi]`` gives exactly bytes ``payload_range(lo, hi)``
of compressing ``v`` (each block's codes and scale depend on its own elements only), and
``block_slices`` makes such boundaries for S shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from lambdatrain.training.flat import iter_slices

SCALE_BYTES = 4  # one float32 scale per block: exact for any block maximum or mean a float32 holds


@dataclass(frozen=True)
class Codec:
    """One codec's geometry: elements per block, code bytes per block, bytes per record."""

    name: str
    block: int  # elements per block (one scale each)
    code_bytes: int  # packed codes of one block

    @property
    def record(self) -> int:
        """Bytes per block in the payload: codes, then the scale."""
        return self.code_bytes + SCALE_BYTES

    @property
    def bits_per_param(self) -> float:
        """Payload bits per element for a vector of whole blocks (the tail block adds < 1 record)."""
        return 8 * self.record / self.block


# ternary: five base-3 digits per byte (3^5 = 243 <= 256), 240 elements = 48 bytes per block;
# sign: one bit per element (np.packbits), 256 elements = 32 bytes. Why these: the package docstring.
CODECS = {
    "ternary": Codec("ternary", block=240, code_bytes=48),
    "sign": Codec("sign", block=256, code_bytes=32),
}


def codec_of(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def blocks(n: int, codec: str) -> int:
    """Blocks (and records) of an n-element vector: the last one may be partial."""
    c = codec_of(codec)
    return -(-n // c.block)


def payload_nbytes(n: int, codec: str) -> int:
    """Length of the payload of an n-element vector, in bytes."""
    return blocks(n, codec) * codec_of(codec).record


def check_slice(lo: int, hi: int, size: int, codec: str) -> None:
    """Raise ValueError unless [lo, hi) of a size-element vector starts on a block boundary and
    ends on one or at the vector's end: only then is its payload a part of the whole's."""
    block = codec_of(codec).block
    if not 0 <= lo <= hi <= size:
        raise ValueError(f"slice [{lo}, {hi}) is not inside a vector of {size} elements")
    if (lo % block and lo != size) or (hi % block and hi != size):
        raise ValueError(f"slice [{lo}, {hi}) of {size} elements is not aligned to {codec}'s "
                         f"blocks of {block}: start and end on a multiple of {block} or at {size}")


def payload_range(lo: int, hi: int, size: int, codec: str) -> tuple[int, int]:
    """The bytes of the whole vector's payload that hold elements [lo, hi) (a block-aligned slice)."""
    check_slice(lo, hi, size, codec)
    c = codec_of(codec)
    start = -(-lo // c.block) if lo == size else lo // c.block  # the end is after the partial block
    return start * c.record, -(-hi // c.block) * c.record


def align_down(index: int, size: int, codec: str) -> int:
    """The block boundary at or below ``index`` (``size`` itself stays: the end is a boundary)."""
    if index >= size:
        return size
    return index - index % codec_of(codec).block


def block_slices(size: int, shards: int, codec: str) -> list[tuple[int, int]]:
    """S contiguous [lo, hi) slices covering the vector, every boundary on a block boundary.

    Whole blocks are dealt out as ``flat.iter_slices`` deals elements (the first ``blocks % S``
    shares get one more); the last share ends at ``size``, so it holds the partial block.
    """
    block = codec_of(codec).block
    return [(min(lo * block, size), min(hi * block, size)) for lo, hi in iter_slices(blocks(size, codec), shards)]
