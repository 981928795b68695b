"""EcoTaxa's training augmentations on a batch of images, as torch operations.

A fine-tuning (:mod:`ecotaxa_core.learn.fine_tuning`) decodes and preprocesses
each image once, into a uint8 array; every batch is then augmented afresh on
the device the network trains on, so the CPU never decodes an image twice and
a GPU does the work itself:

1. horizontal and vertical flips, each with probability 1/2 (exact: pixels
   are moved, not resampled);
2. one random affine transform per image, sampled bilinearly with
   ``grid_sample(padding_mode="border")``, so what enters the frame is the
   image's own edge, i.e. the background that preprocessing padded with:

   - a rotation by an angle uniform in ``[-max_rotation_deg, max_rotation_deg]``
     (plankton has no "up": 180 by default),
   - a zoom by a factor log-uniform in ``[1 / max_zoom, max_zoom]``,
   - a shear along x by an angle uniform in ``[-max_shear_deg, max_shear_deg]``.

Pixels are in a square frame (preprocessing pads to a square), so a rotation
in the normalised coordinates of ``affine_grid`` is a true rotation.
Random draws come from a CPU ``torch.Generator``: a seed gives the same
augmentations on a CPU and on a GPU.

>>> import torch
>>> images = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
>>> out = augment_batch(images, AugmentationSettings(), torch.Generator().manual_seed(0))
>>> tuple(out.shape), out.dtype
((2, 3, 8, 8), torch.float32)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentationSettings", "affine_matrices", "augment_batch", "NO_AUGMENTATION"]


@dataclass(frozen=True)
class AugmentationSettings:
    """What :func:`augment_batch` does (EcoTaxa's flips, rotations, zoom and shear).

    Parameters
    ----------
    flip_horizontal, flip_vertical : each applied to half of the images.
    max_rotation_deg : largest rotation, either way, in degrees (0: none).
    max_zoom : largest zoom factor in or out (1: none); 1.15 draws factors
        between 1 / 1.15 and 1.15, log-uniformly.
    max_shear_deg : largest shear angle along x, either way, in degrees (0: none).
    """

    flip_horizontal: bool = True
    flip_vertical: bool = True
    max_rotation_deg: float = 180.0
    max_zoom: float = 1.15
    max_shear_deg: float = 10.0

    def __post_init__(self):
        if not 0.0 <= self.max_rotation_deg <= 180.0:
            raise ValueError(f"max_rotation_deg must be between 0 and 180, "
                             f"got {self.max_rotation_deg}")
        if not 1.0 <= self.max_zoom <= 4.0:
            raise ValueError(f"max_zoom must be between 1 and 4, got {self.max_zoom}")
        if not 0.0 <= self.max_shear_deg < 60.0:
            raise ValueError(f"max_shear_deg must be between 0 and 60, got {self.max_shear_deg}")

    @property
    def has_affine(self) -> bool:
        return self.max_rotation_deg > 0 or self.max_zoom > 1 or self.max_shear_deg > 0


NO_AUGMENTATION = AugmentationSettings(flip_horizontal=False, flip_vertical=False,
                                       max_rotation_deg=0.0, max_zoom=1.0, max_shear_deg=0.0)


def affine_matrices(angles_deg: torch.Tensor, zooms: torch.Tensor,
                    shears_deg: torch.Tensor) -> torch.Tensor:
    """``affine_grid`` matrices ``(n, 2, 3)`` that rotate, zoom and shear image content.

    The content is zoomed by ``zooms`` (> 1: larger), sheared, then rotated
    by ``angles_deg`` (counter-clockwise as displayed, rows going down); the
    matrix returned is the inverse map (output pixel -> where to sample),
    which is what ``affine_grid`` takes.

    >>> m = affine_matrices(torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([0.0]))
    >>> m[0].tolist()
    [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]
    """
    a = torch.deg2rad(angles_deg.double())
    cos, sin = torch.cos(a), torch.sin(a)
    n = len(a)
    # In (x right, y down) coordinates a counter-clockwise turn on screen is
    # [[cos, sin], [-sin, cos]].
    rotate = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    shear = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    shear[:, 0, 1] = torch.tan(torch.deg2rad(shears_deg.double()))
    forward = rotate @ shear * zooms.double().view(n, 1, 1)
    inverse = torch.linalg.inv(forward)
    return torch.cat([inverse, torch.zeros(n, 2, 1, dtype=torch.float64)], dim=2).float()


def augment_batch(images: torch.Tensor, settings: AugmentationSettings,
                  generator: torch.Generator) -> torch.Tensor:
    """Randomly flipped, rotated, zoomed and sheared copies of ``images``.

    Parameters
    ----------
    images : uint8 tensor ``(n, H, W, 3)`` (preprocessed images, on any device).
    settings : what to draw.
    generator : CPU generator the random parameters come from.

    Returns
    -------
    float32 tensor ``(n, 3, H, W)`` on the device of ``images``, values 0-255,
    channels-last in memory.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (n, H, W, 3), got {images.dtype} "
                         f"{tuple(images.shape)}")
    n, device = images.shape[0], images.device
    x = images.permute(0, 3, 1, 2).float()
    for enabled, dim in ((settings.flip_horizontal, 3), (settings.flip_vertical, 2)):
        if enabled and n:
            chosen = (torch.rand(n, generator=generator) < 0.5).to(device)
            x = torch.where(chosen.view(n, 1, 1, 1), x.flip(dim), x)
    if settings.has_affine and n:
        angles = (torch.rand(n, generator=generator) * 2 - 1) * settings.max_rotation_deg
        log_zoom = math.log(settings.max_zoom)
        zooms = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * log_zoom)
        shears = (torch.rand(n, generator=generator) * 2 - 1) * settings.max_shear_deg
        theta = affine_matrices(angles, zooms, shears).to(device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)
