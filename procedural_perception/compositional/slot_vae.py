"""Slot VAE with an interaction-regularised cross-attention decoder (arXiv 2512.08854, section 3).

The encoder gives each of ``K`` slots a Gaussian posterior (mean, log-variance); the decoder
(``slot_decoder.py``) renders sampled slots; the loss is

    recon + beta * KL + alpha(t) * interaction,   alpha(t) = alpha * clip((t - alpha_start_step) / alpha_warmup_steps, 0, 1)

where ``recon`` is the per-pixel mean squared error (over a random subset of ``train_pixels`` pixels
per batch when set: the decoder renders pixels independently, so this is unbiased and cheaper), ``KL`` the KL divergence to N(0, I) summed over
slots and dimensions (mean over the batch) and ``interaction`` the regulariser of ``interaction.py``.
``alpha = 0`` is the unregularised VAE. Two ways to invert the decoder on out-of-distribution images:

* generative replay (training option ``replay_weight > 0``): recombine the inferred ID slots across
  the batch (slot k of scene a with slot j of scene b), render them without gradient and train the
  encoder to recover the recombined latents (Hungarian-matched slot MSE);
* gradient-based search (``infer(images, search=True)``): optimise the latents from the encoder's
  output to minimise reconstruction error (``latent_search.py``).
"""

from __future__ import annotations

import lightning
import torch

from procedural_perception.compositional.interaction import interaction_penalty
from procedural_perception.compositional.latent_search import latent_search
from procedural_perception.compositional.slot_decoder import SlotDecoder
from procedural_perception.compositional.slot_encoder import build_slot_encoder
from procedural_perception.compositional.slot_matching import matched_mse


class SlotVAE(lightning.LightningModule):
    """Batches are ``(images [B, 3, S, S], latents)``; the ground-truth latents are never used in training."""

    def __init__(
        self,
        n_slots: int = 2,
        slot_dim: int = 8,
        image_size: int = 32,
        channels: int = 32,
        hidden: int = 256,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        frequencies: int = 6,
        lr: float = 1e-3,
        beta: float = 1e-5,
        alpha: float = 0.01,
        alpha_warmup_steps: int = 500,
        alpha_start_step: int = 0,
        replay_weight: float = 0.0,
        replay_start_step: int = 0,
        search_steps: int = 100,
        search_lr: float = 0.05,
        train_pixels: int | None = None,
        encoder: str = "mlp",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = build_slot_encoder(encoder, n_slots, 2 * slot_dim, image_size, channels, hidden)
        self.decoder = SlotDecoder(slot_dim, image_size, d_model, heads, layers, frequencies)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, S, S]`` -> posterior (mean, logvar), each ``[B, K, slot_dim]``."""
        mean, logvar = self.encoder(images).chunk(2, dim=-1)
        # Bounded log-variance keeps exp() finite early in training.
        return mean, logvar.clamp(-10, 5)

    def decode(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, K, slot_dim]`` -> (images ``[B, 3, S, S]``, attention ``[layers, B, heads, S*S, K]``)."""
        return self.decoder(slots)

    def render(self, slots: torch.Tensor) -> torch.Tensor:
        return self.decoder(slots)[0]

    @torch.no_grad()
    def infer(self, images: torch.Tensor, search: bool = False, steps: int | None = None,
              lr: float | None = None, bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Slot latents ``[B, K, slot_dim]``: posterior means, refined by search when ``search``
        (``steps``, ``lr`` default to the hyper-parameters; ``bounds`` see ``latent_search``)."""
        mean, _ = self.encode(images)
        if not search:
            return mean
        steps = self.hparams.search_steps if steps is None else steps
        lr = self.hparams.search_lr if lr is None else lr
        if bounds is not None:
            bounds = (bounds[0].to(images.device), bounds[1].to(images.device))
        return latent_search(self.render, images, mean, steps, lr, bounds).slots

    def alpha_now(self) -> float:
        warmup, t = self.hparams.alpha_warmup_steps, self.global_step - self.hparams.alpha_start_step
        if t < 0:
            return 0.0
        return self.hparams.alpha * (min(1.0, t / warmup) if warmup > 0 else 1.0)

    def losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, logvar = self.encode(images)
        slots = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        n_pixels = images.shape[-1] * images.shape[-2]
        pixels = None
        if self.hparams.train_pixels and self.hparams.train_pixels < n_pixels:
            pixels = torch.randperm(n_pixels, device=images.device)[: self.hparams.train_pixels]
        colours, attention = self.decoder.render_pixels(slots, pixels)  # [B, P', 3]
        target = images.flatten(2).transpose(1, 2)  # [B, S*S, 3]
        target = target if pixels is None else target[:, pixels]
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2)).mean()
        out = {"recon": ((colours - target) ** 2).mean(), "kl": kl, "interaction": interaction_penalty(attention)}
        out["loss"] = out["recon"] + self.hparams.beta * kl + self.alpha_now() * out["interaction"]
        if self.hparams.replay_weight > 0 and self.global_step >= self.hparams.replay_start_step:
            out["replay"] = self.replay_loss(mean.detach())
            out["loss"] = out["loss"] + self.hparams.replay_weight * out["replay"]
        return out

    def replay_loss(self, slots: torch.Tensor) -> torch.Tensor:
        """Recombine ``slots [B, K, D]`` across the batch (each slot index shuffled independently),
        render without gradient, and score the encoder on recovering them (matched slot MSE)."""
        batch, k, _ = slots.shape
        shuffles = torch.stack([torch.randperm(batch, device=slots.device) for _ in range(k)], dim=1)  # [B, K]
        mixed = slots.gather(0, shuffles[..., None].expand_as(slots))  # mixed[b, j] = slots[shuffles[b, j], j]
        with torch.no_grad():
            images = self.render(mixed).clamp(0, 1)
        return matched_mse(self.encode(images)[0], mixed)

    def training_step(self, batch, batch_idx):
        out = self.losses(batch[0])
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=False)
        self.log("train/alpha", self.alpha_now())
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        recon = self.render(self.infer(batch[0]))
        self.log("val/recon", ((recon - batch[0]) ** 2).mean(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        recon = self.render(self.infer(batch[0]))
        self.log("test/recon", ((recon - batch[0]) ** 2).mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
