"""facenet-pytorch's MTCNN ``detect_face`` with its candidate crops batched.

The same three-stage cascade, helpers and thresholds as facenet-pytorch 2.5.3
(``facenet_pytorch/models/utils/detect_face.py``, MIT licence, Tim Esler), except for one
thing: the second and third stages cut every candidate box out of the image and resize
it to 24x24 / 48x48 with ``interpolate(mode="area")``, one candidate at a time in a
Python loop, which was about a quarter of MTCNN's CPU time (and far more of its GPU
time). Here all candidates are cut and area-resized at once from a summed-area table:
area interpolation of a crop is the mean over the windows
``[floor(i*n/S), ceil((i+1)*n/S))`` of adaptive average pooling, and window sums of
integer pixel values are exact (int32 / int64 tables), so the crops equal the loop's
(``tests/faces/test_faces.py`` compares the detections with facenet-pytorch's own).

One more difference: an image whose shorter side is under ``minsize`` (no pyramid level
fits P-Net's 12-pixel window) gives no faces, where facenet-pytorch fails in
``torch.cat`` on the empty pyramid.
"""

from __future__ import annotations

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)
from torchvision.ops.boxes import batched_nms

__all__ = ["detect_faces"]


def _window_bounds(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, size) first and one-past-last pixel of each output cell's averaging window."""
    i = torch.arange(size, device=start.device, dtype=torch.int64)
    lo = torch.div(i[None, :] * length[:, None], size, rounding_mode="floor")
    hi = -torch.div(-(i[None, :] + 1) * length[:, None], size, rounding_mode="floor")  # ceil
    return start[:, None] + lo, start[:, None] + hi


def crop_resize(integral: torch.Tensor, image_inds: torch.Tensor, y, ey, x, ex, size: int) -> torch.Tensor:
    """Area-resized crops ``img[b, :, y-1:ey, x-1:ex]`` -> (N, C, size, size) float32.

    Args:
        integral: (B, H+1, W+1, C) summed-area table of the images, int32 or int64
            (exact integers either way; see ``_integral``).
        image_inds: (N,) image of each candidate.
        y, ey, x, ex: (N,) int arrays from facenet-pytorch's ``pad`` (1-based starts).
        size: output side.
    """
    dev = integral.device
    y0 = torch.as_tensor(np.asarray(y, dtype=np.int64) - 1, device=dev)
    x0 = torch.as_tensor(np.asarray(x, dtype=np.int64) - 1, device=dev)
    hh = torch.as_tensor(np.asarray(ey, dtype=np.int64), device=dev) - y0
    ww = torch.as_tensor(np.asarray(ex, dtype=np.int64), device=dev) - x0
    r0, r1 = _window_bounds(y0, hh, size)
    c0, c1 = _window_bounds(x0, ww, size)
    b = image_inds.to(dev, torch.int64)[:, None, None]

    def at(r, c):
        return integral[b, r[:, :, None], c[:, None, :]]  # (N, size, size, C)

    sums = (at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)).to(torch.float64)
    area = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).to(torch.float64)
    return (sums / area[..., None]).to(torch.float32).permute(0, 3, 1, 2).contiguous()


def _stage_input(integral, boxes, image_inds, w, h, size: int, dtype):
    """Candidates of a refinement stage: kept boxes, their images, normalised (N, 3, size, size) crops.

    Boxes are clipped to the image by facenet-pytorch's ``pad``; the (never seen) empty
    ones are dropped from the boxes too, so crops and boxes stay aligned.
    """
    y, ey, x, ex = pad(boxes, w, h)
    keep = (ey > (y - 1)) & (ex > (x - 1))
    keep_t = torch.as_tensor(keep, device=boxes.device)
    boxes, image_inds = boxes[keep_t], image_inds[keep_t]
    crops = crop_resize(integral, image_inds, y[keep], ey[keep], x[keep], ex[keep], size)
    return boxes, image_inds, (crops.to(dtype) - 127.5) * 0.0078125


def _integral(imgs: torch.Tensor) -> torch.Tensor:
    """(B, H+1, W+1, C) summed-area table of a (B, H, W, C) uint8 batch, in exact integers.

    int32 whenever the largest possible sum (255 x H x W) fits, else int64: half the
    memory traffic of float64 for the cumulative sums and the crops' corner gathers
    (about a tenth of MTCNN's CPU time at 800 px), and the same window sums.
    """
    dtype = torch.int32 if 255 * imgs.shape[1] * imgs.shape[2] < 2**31 else torch.int64
    integral = torch.zeros((imgs.shape[0], imgs.shape[1] + 1, imgs.shape[2] + 1, imgs.shape[3]),
                           dtype=dtype, device=imgs.device)
    integral[:, 1:, 1:] = imgs.to(dtype).cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
    return integral


def detect_faces(imgs: np.ndarray, minsize: int, pnet, rnet, onet, threshold, factor: float, device):
    """facenet-pytorch's ``detect_face`` for a (B, H, W, 3) uint8 batch; same return value.

    The same steps in the same order, each stage a function named after it:
    ``_pyramid_scales``, ``_stage1_pnet``, ``_stage2_rnet``, ``_stage3_onet``, ``_per_image``.
    """
    imgs = torch.as_tensor(np.ascontiguousarray(imgs), device=device)
    model_dtype = next(pnet.parameters()).dtype
    integral = _integral(imgs)
    imgs = imgs.permute(0, 3, 1, 2).type(model_dtype)

    batch_size = len(imgs)
    h, w = imgs.shape[2:4]
    scales = _pyramid_scales(h, w, minsize, factor)
    if not scales:  # shorter side under minsize: no pyramid level fits P-Net's 12 px window, so no face
        return ([np.zeros((0, 5), np.float32) for _ in range(batch_size)],
                [np.zeros((0, 5, 2), np.float32) for _ in range(batch_size)])

    boxes, image_inds = _stage1_pnet(imgs, scales, pnet, threshold[0])
    if len(boxes) > 0:
        boxes, image_inds = _stage2_rnet(integral, boxes, image_inds, w, h, rnet, threshold[1], model_dtype)
    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes) > 0:
        boxes, image_inds, points = _stage3_onet(integral, boxes, image_inds, w, h, onet, threshold[2], model_dtype)
    return _per_image(boxes, points, image_inds, batch_size)


def _pyramid_scales(h: int, w: int, minsize: int, factor: float) -> list[float]:
    """The image pyramid's scales: from ``12 / minsize``, times ``factor`` while the shorter side fits 12 px."""
    m = 12.0 / minsize
    minl = min(h, w) * m

    scales = []
    scale_i = m
    while minl >= 12:
        scales.append(scale_i)
        scale_i = scale_i * factor
        minl = minl * factor
    return scales


def _stage1_pnet(imgs: torch.Tensor, scales: list[float], pnet, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """First stage: P-Net over every pyramid level, NMS per level then across levels, the boxes
    regressed and squared. Returns (N, 5) boxes (x1, y1, x2, y2, score) and (N,) image indices."""
    h, w = imgs.shape[2:4]
    boxes, image_inds, scale_picks = [], [], []
    offset = 0
    for scale in scales:
        im_data = imresample(imgs, (int(h * scale + 1), int(w * scale + 1)))
        im_data = (im_data - 127.5) * 0.0078125
        reg, probs = pnet(im_data)
        boxes_scale, image_inds_scale = generateBoundingBox(reg, probs[:, 1], scale, threshold)
        boxes.append(boxes_scale)
        image_inds.append(image_inds_scale)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], image_inds_scale, 0.5)
        scale_picks.append(pick + offset)
        offset += boxes_scale.shape[0]

    boxes = torch.cat(boxes, dim=0)
    image_inds = torch.cat(image_inds, dim=0)
    scale_picks = torch.cat(scale_picks, dim=0)
    boxes, image_inds = boxes[scale_picks], image_inds[scale_picks]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]

    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    qq1 = boxes[:, 0] + boxes[:, 5] * regw
    qq2 = boxes[:, 1] + boxes[:, 6] * regh
    qq3 = boxes[:, 2] + boxes[:, 7] * regw
    qq4 = boxes[:, 3] + boxes[:, 8] * regh
    boxes = torch.stack([qq1, qq2, qq3, qq4, boxes[:, 4]]).permute(1, 0)
    boxes = rerec(boxes)
    return boxes, image_inds


def _stage2_rnet(integral, boxes: torch.Tensor, image_inds: torch.Tensor, w, h, rnet, threshold: float,
                 model_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Second stage: R-Net on the 24x24 crops of the candidates, kept over ``threshold``, NMS,
    regressed and squared. Returns (N, 5) boxes and (N,) image indices."""
    boxes, image_inds, im_data = _stage_input(integral, boxes, image_inds, w, h, 24, model_dtype)
    out = fixed_batch_process(im_data, rnet)
    out0 = out[0].permute(1, 0)
    out1 = out[1].permute(1, 0)
    score = out1[1, :]
    ipass = score > threshold
    boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
    image_inds = image_inds[ipass]
    mv = out0[:, ipass].permute(1, 0)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
    boxes = bbreg(boxes, mv)
    boxes = rerec(boxes)
    return boxes, image_inds


def _stage3_onet(integral, boxes: torch.Tensor, image_inds: torch.Tensor, w, h, onet, threshold: float,
                 model_dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Third stage: O-Net on the 48x48 crops, kept over ``threshold``, the five landmarks placed in
    the image, boxes regressed, NMS ("Min"). Returns (N, 5) boxes, (N,) image indices, (N, 5, 2) points."""
    boxes, image_inds, im_data = _stage_input(integral, boxes, image_inds, w, h, 48, model_dtype)
    out = fixed_batch_process(im_data, onet)
    out0 = out[0].permute(1, 0)
    out1 = out[1].permute(1, 0)
    out2 = out[2].permute(1, 0)
    score = out2[1, :]
    points = out1
    ipass = score > threshold
    points = points[:, ipass]
    boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
    image_inds = image_inds[ipass]
    mv = out0[:, ipass].permute(1, 0)
    w_i = boxes[:, 2] - boxes[:, 0] + 1
    h_i = boxes[:, 3] - boxes[:, 1] + 1
    points_x = w_i.repeat(5, 1) * points[:5, :] + boxes[:, 0].repeat(5, 1) - 1
    points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
    points = torch.stack((points_x, points_y)).permute(2, 1, 0)
    boxes = bbreg(boxes, mv)
    pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
    return boxes[pick], image_inds[pick], points[pick]


def _per_image(boxes: torch.Tensor, points: torch.Tensor, image_inds: torch.Tensor,
               batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The detections split by image: a list of (n, 5) boxes and one of (n, 5, 2) points."""
    boxes = boxes.cpu().numpy()
    points = points.cpu().numpy()
    image_inds = image_inds.cpu()
    batch_boxes, batch_points = [], []
    for b_i in range(batch_size):
        b_i_inds = np.where(image_inds == b_i)
        batch_boxes.append(boxes[b_i_inds].copy())
        batch_points.append(points[b_i_inds].copy())
    return batch_boxes, batch_points
