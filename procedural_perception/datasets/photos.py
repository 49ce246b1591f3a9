"""Fixed real photographs for pictures and checks: scikit-image's sample photos (inside its wheel,
nothing downloads), or the first images of a segmentation source or a folder.

The feature-map callback draws its PCA and K-means maps on these; the 2AFC distortion set cuts its
crops from :data:`PHOTOS`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from procedural_perception.datasets.image_files import image_to_tensor, load_rgb
from procedural_perception.datasets.scan import find_images
from procedural_perception.datasets.segmentation import BUILTINS, load_segmentation

# scikit-image sample photographs shipped inside the wheel (no download): varied natural content.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "immunohistochemistry",
          "hubble_deep_field", "retina", "grass", "gravel", "brick")


def visual_samples(spec: str, n: int, size: int) -> torch.Tensor:
    """``[n, 3, size, size]`` float images in [0, 1]: ``photos`` (:data:`PHOTOS`, centre squares), a
    segmentation spec (``nuclei``, ``coco:<root>``, ...; see :mod:`.segmentation`) or a folder of images."""
    if spec == "photos":
        import skimage.data

        images = []
        for name in PHOTOS[:n]:
            a = np.asarray(getattr(skimage.data, name)())
            side = min(a.shape[:2])
            y, x = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
            images.append(image_to_tensor(a[y:y + side, x:x + side]))
        return torch.stack([F.interpolate(i[None], size=(size, size), mode="bicubic", antialias=True)[0]
                            for i in images]).clamp(0, 1)
    if spec.partition(":")[0] in BUILTINS + ("coco", "voc", "ade20k") or (Path(spec) / "masks").is_dir():
        data = load_segmentation(spec, size, size, n)
        return torch.stack([item[0] for item in (data[i] for i in range(len(data))) if item is not None])
    return torch.stack([F.interpolate(load_rgb(p)[None], size=(size, size), mode="bicubic", antialias=True)[0]
                        for p in find_images(spec)[:n]]).clamp(0, 1)
