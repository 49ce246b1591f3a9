"""The registered labelled data-set specs (see :mod:`.base`). Adding a data set: one file in this
folder defining ``SPEC``, and one entry below. Prefixed forms are matched first; the forms without
a prefix (``.npz`` files, then folders) are asked in this order."""

from procedural_perception.datasets.specs import (
    celeba,
    cub,
    digits,
    fashion_mnist,
    flowers102,
    folder,
    food101,
    imagenet,
    inat21,
    lfw_subset,
    medmnist,
)

SPECS = (
    fashion_mnist.SPEC,
    lfw_subset.SPEC,
    digits.SPEC,
    flowers102.SPEC,
    food101.SPEC,
    cub.SPEC,
    celeba.SPEC,
    imagenet.SPEC,
    inat21.SPEC,
    medmnist.SPEC,
    folder.SPEC,
)
