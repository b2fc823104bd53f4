"""Training losses of SSP-OV.

Matching: **Hungarian**, per frame, between the Q queries and the frame's ground-truth
segments (one binary mask per sounding class present). The cost is the usual
Mask2Former mix (class probability, mask BCE, mask Dice), solved with
``scipy.optimize.linear_sum_assignment``. Hungarian rather than per-pixel because the
sounding score is a *per-object* decision (OV-AVSS's class-agnostic localization): a
query must own one object to be told "you are sounding" or "you are not". Matched
queries learn their mask (BCE + Dice), their class over the base vocabulary (through
the text embeddings) and sounding = 1; unmatched queries learn sounding = 0.

On top of that, a per-pixel negative log-likelihood of the decoder's label map (the
exact output the runtime argmaxes) ties the pieces together; the flow loss (end-point
error, or photometric without ground truth) and SSP's post-mask loss complete it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from avss_sdk.metrics import IGNORE_INDEX
from avss_sdk.modeling.flow import flow_loss, photometric_loss
from avss_sdk.modeling.mask_decoder import DecoderOutput, heard_logits
from avss_sdk.modeling.post_mask import post_mask_loss
from avss_sdk.modeling.ssp_ov import ForwardOutput


@dataclass
class LossWeights:
    mask_bce: float = 2.0
    mask_dice: float = 2.0
    classification: float = 1.0
    sounding: float = 1.0
    pixel: float = 2.0
    audio_text: float = 1.0
    flow: float = 0.05
    post_mask: float = 0.5


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean soft Dice loss of mask logits [N, P] against binary targets [N, P]."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).mean()


def segments(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth segments of one frame [P] (0 bg, k+1 class, IGNORE): (class ids [M] 0-based, masks [M, P])."""
    present = torch.unique(targets)
    present = present[(present > 0) & (present != IGNORE_INDEX)]
    masks = (targets.unsqueeze(0) == present.unsqueeze(1)).float()
    return present - 1, masks


@torch.no_grad()
def hungarian_match(mask_logits: torch.Tensor, class_logits: torch.Tensor, classes: torch.Tensor,
                    masks: torch.Tensor, valid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Optimal (query, segment) pairs for one frame. mask_logits [Q, P], class_logits [Q, K], masks [M, P]."""
    if len(classes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    logits, masks = mask_logits[:, valid], masks[:, valid]
    cost_class = -class_logits.softmax(-1)[:, classes]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost_bce = (pos @ masks.t() + neg @ (1 - masks).t()) / max(logits.shape[1], 1)
    probs = logits.sigmoid()
    cost_dice = 1 - (2 * probs @ masks.t() + 1) / (probs.sum(-1, keepdim=True) + masks.sum(-1).unsqueeze(0) + 1)
    cost = cost_class + 2 * cost_bce + 2 * cost_dice
    rows, cols = linear_sum_assignment(cost.float().cpu().numpy())
    return rows, cols


def pixel_loss(pixel_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """NLL of the label map: log-probabilities [B, K+1, h, w] upsampled to targets [B, H, W]."""
    up = F.interpolate(pixel_logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return F.nll_loss(up, targets, ignore_index=IGNORE_INDEX)


def segmentation_losses(out: DecoderOutput, targets: torch.Tensor, mask_size: int) -> dict[str, torch.Tensor]:
    """Set losses (matched masks, classes, sounding) and the per-pixel loss for one batch.

    Masks are compared at ``mask_size`` x ``mask_size`` (targets nearest-downsampled).
    """
    b, q = out.sounding.shape
    small = F.interpolate(targets[:, None].float(), size=(mask_size, mask_size), mode="nearest")[:, 0].long()
    mask_logits = F.interpolate(out.masks, size=(mask_size, mask_size), mode="bilinear", align_corners=False)
    mask_logits = mask_logits.flatten(2)
    sounding_target = torch.zeros_like(out.sounding)
    matched_logits, matched_masks, matched_valid, class_logits, class_targets = [], [], [], [], []
    for i in range(b):
        flat = small[i].flatten()
        classes, masks = segments(flat)
        valid = flat != IGNORE_INDEX
        rows, cols = hungarian_match(mask_logits[i], out.class_logits[i], classes, masks, valid)
        if len(rows) == 0:
            continue
        rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
        sounding_target[i, rows_t] = 1.0
        matched_logits.append(mask_logits[i, rows_t])
        matched_masks.append(masks[cols_t])
        matched_valid.append(valid.expand(len(rows), -1))
        class_logits.append(out.class_logits[i, rows_t])
        class_targets.append(classes[cols_t])
    losses = {"sounding": F.binary_cross_entropy_with_logits(out.sounding, sounding_target),
              "pixel": pixel_loss(out.pixel_logits, targets)}
    if matched_logits:
        logits, masks, valid = torch.cat(matched_logits), torch.cat(matched_masks), torch.cat(matched_valid).float()
        bce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
        losses["mask_bce"] = (bce * valid).sum() / valid.sum().clamp_min(1)
        losses["mask_dice"] = dice_loss(logits * valid + (valid - 1) * 1e4, masks * valid)
        losses["classification"] = F.cross_entropy(torch.cat(class_logits), torch.cat(class_targets))
    else:
        zero = out.masks.sum() * 0
        losses.update(mask_bce=zero, mask_dice=zero, classification=zero)
    return losses


def audio_text_loss(audio_embedding: torch.Tensor, class_embeddings: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE: the heard audio, in the text space, should match each sounding class's text embedding.

    targets [B, H, W] (0 background, k + 1 word k); class_embeddings [K, D].
    """
    k = class_embeddings.shape[0]
    present = torch.zeros(targets.shape[0], k + 1, device=targets.device)
    flat = targets.flatten(1).clamp_max(k + 1).where(targets.flatten(1) != IGNORE_INDEX, 0)
    present.scatter_(1, flat, 1.0)
    return F.binary_cross_entropy_with_logits(heard_logits(audio_embedding, class_embeddings), present[:, 1:])


def total_loss(output: ForwardOutput, class_embeddings: torch.Tensor, targets: torch.Tensor,
               flow_target: torch.Tensor | None,
               previous: torch.Tensor, current: torch.Tensor, weights: LossWeights,
               mask_size: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of every loss; also the unweighted parts as floats for the log."""
    losses = segmentation_losses(output.decoder, targets, mask_size)
    losses["audio_text"] = audio_text_loss(output.decoder.audio_embedding, class_embeddings, targets)
    if flow_target is not None:
        losses["flow"] = flow_loss(output.flow, flow_target)
    else:
        losses["flow"] = photometric_loss(previous, current, output.flow)
    if output.post_mask is not None:
        motion_source = flow_target if flow_target is not None else output.flow.detach()
        losses["post_mask"] = post_mask_loss(output.post_mask, motion_source)
    total = sum(getattr(weights, name) * value for name, value in losses.items())
    return total, {name: float(value.detach()) for name, value in losses.items()}

