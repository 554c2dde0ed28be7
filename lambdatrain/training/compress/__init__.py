"""Compressed transports with error feedback: 2-bit-class ternary and 1-bit scaled sign codecs.

A worker (or the combiner, for the update it broadcasts) adds the residual it kept to its new
vector, compresses the sum blockwise with one scale per block, sends the payload and keeps what
the payload could not say as its next residual (error feedback: EF-SignSGD, Karimireddy et al.,
ICML 2019; blockwise on both sides, dist-EF-SGD, Zheng et al., NeurIPS 2019). Over T steps the
decoded payloads sum to the gradients' sum minus the last residual, so nothing is lost, only late.

The codecs (the value a block of elements decodes to; s is the block's one scale):

* ``ternary``: s = the block's largest magnitude, x -> -s, 0 or +s, rounded to nearest
  (|x| >= s/2 -> sign(x) s, else 0). Codes are base-3 digits packed five per byte (3^5 = 243),
  blocks of 240 elements: 48 code bytes + a float32 scale = 52 bytes per 240, 1.733 bits per
  parameter, 1/18.5 of float32. The alternative, 2-bit codes (two np.packbits bit planes, +
  and -) with blocks of 256, is 2.125 bits (1/15.06). Measured on a 20 M-element vector (this
  machine's 2 shared cores, load about 1.4, prototype kernels): bit planes encoded at 2.2 GB/s of
  float32 input and decoded at 2.7-3.1 GB/s; base-3 encoded at 1.9 GB/s (Horner in uint8, four
  passes) and decoded at 2.7 GB/s (one table lookup per byte). Both run at about the speed of a
  float32 file read and add from the page cache (bench.combine's floor, 1.3-2.0 GB/s) and far
  faster than EFS (0.1-0.5 GB/s per client), where the bytes are the cost: base-3 moves 18 %
  fewer bytes for a 12 % slower encode, so it is the one kept. 240 rather than 320 (also a
  multiple of 5, 1.7 bits): at most the 256 of the accuracy simulation in issue 14, so no scale
  covers more values. The kept kernels' speeds: docs/benchmarks.md, "Compressed codecs".
* ``sign``: s = the block's mean magnitude, x -> -s if x < 0 else +s; one bit per element
  (np.packbits), blocks of 256: 32 + 4 = 36 bytes per 256, 1.125 bits, 1/28.4 of float32.

Scales are float32: exact for any maximum, and 16-bit scales would save 0.07 bits at the price of
a rounding that error feedback would have to carry. Layout, sizes and block-aligned slices:
layout.py; the per-chunk arithmetic: kernels.py; whole vectors and error feedback: stream.py.
Non-finite inputs are not screened: an inf or NaN makes its block's scale non-finite, as it would
travel in float32.
"""

from lambdatrain.training.compress.layout import (
    CODECS, Codec, align_down, block_slices, blocks, check_slice, codec_of, payload_nbytes, payload_range,
)
from lambdatrain.training.compress.stream import compress, decode, decode_add, encode

__all__ = ["CODECS", "Codec", "align_down", "block_slices", "blocks", "check_slice", "codec_of", "compress",
           "decode", "decode_add", "encode", "payload_nbytes", "payload_range"]
