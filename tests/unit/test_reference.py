"""bench/reference.py's on-device augmentation: the same crop and flip as lambdatrain.training.data's."""

from __future__ import annotations

import torch

from bench.reference import PAD, _augment


def test_every_augmented_image_is_a_shifted_possibly_flipped_window_of_the_padded_original():
    x = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = _augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    flips = shifts = 0
    for i in range(len(x)):
        windows = [(dy, dx, flip) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1) for flip in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(2) if flip else w)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert windows, i
        flips += any(f for _, _, f in windows)
        shifts += any((dy, dx) != (PAD, PAD) for dy, dx, _ in windows)
    assert 0 < flips < len(x) and shifts > len(x) // 2  # both kinds of change happen, not always
