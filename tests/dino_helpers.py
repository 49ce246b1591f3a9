"""Module-level helpers for the DINO tests (spawned processes must import them)."""

import torch

from procedural_perception.core.distributed import rank_and_world


def distributed_center(shards: list[torch.Tensor]) -> list[list[float]]:
    from lightning_modules.dino_loss import DINOLoss

    rank, _ = rank_and_world()
    local = shards[rank]
    loss_fn = DINOLoss(local.shape[1], 2)
    loss_fn(torch.zeros_like(local), local, 0)
    # Plain lists: a tensor would travel as shared memory that vanishes when this process exits.
    return loss_fn.center.tolist()


# A DINO small enough for tests: 32 px global / 16 px local crops, patch 8, width 32, 2 blocks.
TINY = dict(
    arch="vit_tiny_patch16_224", patch_size=8, embed_dim=32, depth=2, num_heads=2, out_dim=64,
    head_hidden_dim=64, head_bottleneck_dim=16, global_crop_size=32, local_crop_size=16, n_local_crops=2,
)
TINY_OVERRIDES = [f"model.{k}={v}" for k, v in TINY.items()]


def tiny_dino(**overrides):
    from lightning_modules.dino import DINO

    return DINO(**{**TINY, **overrides})


def random_images(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class RandomImages(torch.utils.data.Dataset):
    """In-memory random images passed through ``transform`` (the multi-crop)."""

    def __init__(self, n: int, transform) -> None:
        self.images = random_images(n)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i])


def random_loader(model, n: int = 8, batch_size: int = 4):
    return torch.utils.data.DataLoader(RandomImages(n, model.train_transform()), batch_size=batch_size, drop_last=True)


def fast_trainer(**kwargs):
    import lightning as L

    args = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                accelerator="cpu", devices=1, precision="32-true", log_every_n_steps=1, max_epochs=10)
    args.update(kwargs)
    return L.Trainer(**args)
