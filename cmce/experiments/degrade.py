"""Photo degradations, to evaluate and train on galleries of mixed photo quality.

Real galleries mix sharp photos with blurred, low-resolution, heavily compressed, dark,
noisy and partly covered ones, and some are not photos of a scene at all but tight face
crops (ID-photo and badge databases) or faces a few dozen pixels wide (CCTV stills,
group photos). ``evaluate --gallery-degrade SPEC`` degrades gallery photos only (queries
stay as they are), and training can degrade gallery-side photos as augmentation (with
``TRAIN_KINDS``). Every degradation is deterministic: the same file, kind and seed give
the same pixels (so the embedding cache, keyed by content, serves repeated runs).

Kinds (strength drawn per photo from the range given; "the face box" is the subject's
detector box when known, else the central 60% of the photo):

==========  =================================================================
blur        Gaussian blur, radius 2-4 px
lowres      the whole photo downscaled to 28-48 px on its long side and back
jpeg        JPEG quality 5-12
dark        gamma 2.5-3.5 (x -> x**gamma on [0, 1])
noise       Gaussian noise, sigma 15-30 grey levels
occlusion   a grey band over 35-50% of the face: the eyes (sunglasses) or the
            mouth and chin (a mask)
crop        the photo cut to the face, one of three margins drawn uniformly: the
            face box itself; 10% inside it (each side moved in by 10% of the
            box's width or height); or the face only, brow to chin (the box of
            the 5 landmarks grown by 50% of its width on each side, 40% of its
            height above and 45% below; without landmarks, 10% inside the box).
            The output is the crop: smaller than the photo
tiny        the whole photo downscaled so that the face box is 16-40 px wide
            (not scaled back up: the output is the small photo; a face already
            narrower than the width drawn is left as it is)
==========  =================================================================

``crop`` and ``tiny`` change the image size, every other kind keeps it.

A SPEC is ``KIND`` (every gallery photo), ``KIND:SHARE``, or ``mix:SHARE`` (that share
of the gallery, each photo by one of ``MIX_KINDS`` drawn uniformly), optionally with
the kinds to mix: ``mix:0.6:blur+noise`` or ``mix:0.6:crop+tiny``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from cmce.errors import CmceError
from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import MIN_FACE_PIXELS

logger = logging.getLogger(__name__)

__all__ = [
    "CROP_MARGINS", "DEGRADATIONS", "MIX_KINDS", "RESIZING_KINDS", "TRAIN_KINDS", "DegradeSpec", "crop_box",
    "degrade_image", "degrade_gallery", "plan_degradation", "tiny_size", "write_degraded",
]

# new kinds go at the end: a kind's position seeds its pixels (write_degraded)
DEGRADATIONS = ("blur", "lowres", "jpeg", "dark", "noise", "occlusion", "crop", "tiny")
MIX_KINDS = ("blur", "lowres", "jpeg", "dark")
TRAIN_KINDS = ("blur", "lowres", "jpeg", "dark", "noise", "occlusion")
"""The kinds ``train_bundle`` degrades its mixed-quality validation galleries and augmentation
copies with. Adding ``crop`` or ``tiny`` here changes every bundle trained from then on (and
is the one change needed to train on them)."""
RESIZING_KINDS = ("crop", "tiny")
"""Kinds whose output is smaller than the photo (every other kind keeps its size)."""
CROP_MARGINS = ("box", "inside", "face")
"""The margins ``crop`` draws from: the face box, 10% inside it, brow to chin."""
TINY_FACE_WIDTH = (16.0, 40.0)
_SPEC = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<share>[0-9.]+))?(?::(?P<kinds>[a-z+]+))?$")


@dataclass(frozen=True)
class DegradeSpec:
    """Which share of the gallery to degrade, and by which kinds.

    Attributes:
        share: fraction of gallery photos degraded, in (0, 1].
        kinds: the degradations drawn from (uniformly, one per photo).
    """

    share: float
    kinds: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise CmceError(f"degradation share must be in (0, 1], got {self.share}")
        bad = [k for k in self.kinds if k not in DEGRADATIONS]
        if bad or not self.kinds:
            raise CmceError(f"unknown degradation {bad or '(none)'}; valid kinds: {', '.join(DEGRADATIONS)}")

    @classmethod
    def parse(cls, text: str) -> DegradeSpec:
        """``mix:0.6``, ``mix:0.6:blur+noise``, ``blur`` or ``blur:0.5`` (see the module docstring)."""
        m = _SPEC.match(text.strip().lower())
        if not m:
            raise CmceError(f"cannot read degradation spec {text!r}; write KIND, KIND:SHARE or mix:SHARE[:K1+K2], "
                            f"KIND one of {', '.join(DEGRADATIONS)}")
        kind, share, kinds = m["kind"], m["share"], m["kinds"]
        try:
            value = float(share) if share else (None if kind == "mix" else 1.0)
        except ValueError as e:
            raise CmceError(f"degradation share {share!r} is not a number") from e
        if kind == "mix":
            if value is None:
                raise CmceError("mix needs a share, e.g. mix:0.6")
            return cls(value, tuple(kinds.split("+")) if kinds else MIX_KINDS)
        if kinds:
            raise CmceError(f"only mix takes a list of kinds, got {text!r}")
        return cls(value, (kind,))

    @property
    def text(self) -> str:
        """The canonical SPEC string."""
        if len(self.kinds) == 1:
            return self.kinds[0] if self.share == 1.0 else f"{self.kinds[0]}:{self.share:g}"
        tail = "" if self.kinds == MIX_KINDS else ":" + "+".join(self.kinds)
        return f"mix:{self.share:g}{tail}"


def _face_box(shape: tuple[int, int], box: Sequence[float] | None) -> tuple[float, float, float, float]:
    """The face box clipped to the image, or the central 60% of the photo when none is known."""
    h, w = shape
    if box is None:
        return 0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)


def _face_band(shape: tuple[int, int], box: Sequence[float] | None, rng: np.random.Generator) -> tuple[int, int, int, int]:
    h, w = shape
    if box is None:  # no face known: the central 60% of the photo
        x1, y1, x2, y2 = 0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h
    else:
        x1, y1, x2, y2 = (float(v) for v in box)
    fh = y2 - y1
    cover = rng.uniform(0.35, 0.5) * fh
    if rng.random() < 0.5:  # sunglasses: a band over the eyes
        top = y1 + 0.2 * fh
    else:  # a mask: mouth and chin
        top = y2 - cover
    return (max(0, int(x1)), max(0, int(top)), min(w, int(round(x2))), min(h, int(round(top + cover))))


def crop_box(shape: tuple[int, int], margin: str, box: Sequence[float] | None = None,
             landmarks: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """The pixel rectangle ``crop`` cuts with ``margin`` (one of ``CROP_MARGINS``).

    Args:
        shape: ``(H, W)`` of the photo.
        margin: ``"box"`` (the face box), ``"inside"`` (each side moved in by 10% of the
            box's width or height) or ``"face"`` (brow to chin: the landmarks' bounding
            box grown by 50% of its width left and right, 40% of its height above and 45%
            below; ``"inside"`` when ``landmarks`` is None).
        box: the face box ``(x1, y1, x2, y2)``; default the central 60% of the photo.
        landmarks: (5, 2) points, MTCNN's order.

    Returns:
        ``(x1, y1, x2, y2)`` integer pixels inside the photo, at least 1 px each way.
    """
    h, w = shape
    x1, y1, x2, y2 = _face_box(shape, box)
    if margin == "face" and landmarks is not None:
        p = np.asarray(landmarks, np.float64).reshape(5, 2)
        (lx, ly), (hx, hy) = p.min(0), p.max(0)
        x1, x2 = lx - 0.5 * (hx - lx), hx + 0.5 * (hx - lx)
        y1, y2 = ly - 0.4 * (hy - ly), hy + 0.45 * (hy - ly)
    elif margin in ("inside", "face"):
        dx, dy = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
        x1, y1, x2, y2 = x1 + dx, y1 + dy, x2 - dx, y2 - dy
    elif margin != "box":
        raise CmceError(f"unknown crop margin {margin!r}; valid: {', '.join(CROP_MARGINS)}")
    left, top = min(max(0, int(round(x1))), w - 1), min(max(0, int(round(y1))), h - 1)
    right, bottom = max(left + 1, min(w, int(round(x2)))), max(top + 1, min(h, int(round(y2))))
    return left, top, right, bottom


def tiny_size(shape: tuple[int, int], box: Sequence[float] | None, width: float) -> tuple[int, int]:
    """``(W', H')`` of the photo scaled so that the face box is about ``width`` px wide.

    The scale is rounded so that the face's width in the output stays within
    ``TINY_FACE_WIDTH`` ([16, 40] px), and is never above 1 (a narrower face is left as it is).
    """
    h, w = shape
    x1, _, x2, _ = _face_box(shape, box)
    face = max(x2 - x1, 1.0)
    if face <= width:
        return w, h
    lo, hi = TINY_FACE_WIDTH
    new_w = min(max(int(round(w * width / face)), int(np.ceil(lo * w / face))), int(np.floor(hi * w / face)))
    new_w = max(1, min(new_w, w))
    return new_w, max(1, int(round(h * new_w / w)))


def degrade_image(image: np.ndarray, kind: str, rng: np.random.Generator,
                  box: Sequence[float] | None = None, landmarks: np.ndarray | None = None) -> np.ndarray:
    """One degraded copy of an RGB uint8 image; see the module docstring for each kind.

    Args:
        image: (H, W, 3) the photo.
        kind: one of ``DEGRADATIONS``.
        rng: draws the strength (for ``occlusion`` which band, for ``crop`` which margin).
        box: the subject's face box ``(x1, y1, x2, y2)`` for ``occlusion``, ``crop`` and
            ``tiny``; default the central 60% of the photo.
        landmarks: the subject's (5, 2) landmarks, for ``crop``'s brow-to-chin margin.

    Returns:
        (H', W', 3) uint8: the size of ``image`` except for ``RESIZING_KINDS`` (smaller).
    """
    if kind not in DEGRADATIONS:
        raise CmceError(f"unknown degradation {kind!r}; valid kinds: {', '.join(DEGRADATIONS)}")
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    if kind == "crop":
        margin = CROP_MARGINS[int(rng.integers(0, len(CROP_MARGINS)))]
        return np.array(img.crop(crop_box((img.height, img.width), margin, box, landmarks)), dtype=np.uint8)
    if kind == "tiny":
        size = tiny_size((img.height, img.width), box, rng.uniform(*TINY_FACE_WIDTH))
        return np.asarray(img if size == img.size else img.resize(size, Image.BILINEAR), dtype=np.uint8)
    if kind == "blur":
        out = img.filter(ImageFilter.GaussianBlur(rng.uniform(2, 4)))
    elif kind == "lowres":
        side = int(rng.integers(28, 49))
        scale = side / max(img.size)
        small = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        out = img.resize(small, Image.BILINEAR).resize(img.size, Image.BILINEAR)
    elif kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(5, 13)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    elif kind == "dark":
        x = np.asarray(img, np.float32) / 255.0
        return np.clip(255.0 * x ** rng.uniform(2.5, 3.5), 0, 255).astype(np.uint8)
    elif kind == "noise":
        x = np.asarray(img, np.float32) + rng.normal(0.0, rng.uniform(15, 30), size=image.shape)
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    else:
        x = np.array(img)
        x1, y1, x2, y2 = _face_band(x.shape[:2], box, rng)
        x[y1:y2, x1:x2] = 128
        return x
    return np.asarray(out, dtype=np.uint8)


def plan_degradation(n: int, spec: DegradeSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``n`` gallery photos to degrade, and by which kind.

    Returns:
        (positions, kinds): ``round(share * n)`` distinct positions in [0, n), sorted,
        and the kind for each, drawn uniformly from ``spec.kinds``.
    """
    rng = np.random.default_rng(seed)
    k = int(round(spec.share * n))
    picked = np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, int)
    kinds = np.asarray(spec.kinds)[rng.integers(0, len(spec.kinds), size=k)] if k else np.zeros(0, "<U9")
    return picked, kinds


def write_degraded(images: Sequence[np.ndarray], digests: Sequence[str], kinds: Sequence[str], seed: int,
                   folder: str | Path, boxes: Sequence[Sequence[float] | None] | None = None,
                   landmarks: Sequence[np.ndarray | None] | None = None) -> list[Path]:
    """Write one degraded PNG per image; the pixels depend only on (content digest, kind, seed).

    Args:
        images: (H, W, 3) uint8 photos.
        digests: each photo's content hash (hex).
        kinds: the degradation of each.
        seed: with the digest and the kind, seeds the strength drawn.
        folder: where the PNGs go (created).
        boxes: each photo's subject face box, or None (``occlusion``, ``crop``, ``tiny``).
        landmarks: each photo's subject (5, 2) landmarks, or None (``crop``).

    Returns:
        The files written, in order (``crop`` and ``tiny`` copies are smaller than their photo).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for j, (img, digest, kind) in enumerate(zip(images, digests, kinds)):
        rng = np.random.default_rng([seed, int(digest[:12], 16), DEGRADATIONS.index(kind)])
        box = None if boxes is None else boxes[j]
        points = None if landmarks is None else landmarks[j]
        path = folder / f"{digest[:16]}-{kind}-s{seed}.png"
        Image.fromarray(degrade_image(img, kind, rng, box, points)).save(path)
        out.append(path)
    return out


def degrade_gallery(embedded, gallery_positions: np.ndarray, spec: DegradeSpec, *, seed: int = 0,
                    models: Sequence[str], cache=None, progress: bool = False,
                    detector: FaceDetector | None = None):
    """Replace a share of the gallery's photos by degraded copies, re-detected and re-embedded.

    Only ``gallery_positions`` (indices into ``embedded``) are candidates; queries stay
    as they are. A degraded copy in which no face is found (or only one under
    ``faces.MIN_FACE_PIXELS``) keeps its original entry (and is counted): a real gallery
    would have no entry for it at all, which the gallery-only view of rejection cannot
    measure. The faces swapped in are the copies' (in the copy's pixels: ``crop`` and
    ``tiny`` copies are smaller than the photo at ``embedded.paths``).

    Args:
        embedded: ``EmbeddedFiles`` of the whole dataset (its subject faces place
            ``occlusion``, ``crop`` and ``tiny``).
        gallery_positions: which files are gallery photos.
        spec: what to degrade.
        seed: picks the photos and the kinds (recorded in the report).
        models: backbones to embed the degraded copies with.
        cache: an ``EmbeddingCache`` (degraded copies are cached by content like any photo).
        detector: what the copies are detected with (default ``embed_files``'s:
            ``create_detector("plain")``); pass the one ``embedded`` was made with.

    Returns:
        (EmbeddedFiles with the degraded entries swapped in, report dict, (N,) bool mask
        of the entries swapped). The report counts the copies kept clean per kind
        (``kept_clean_no_face``) and, when any were, those whose face or whole image was
        under 16 px (``kept_clean_too_small``, a subset).
    """
    from cmce.io.images import content_hash, load_image
    from cmce.models.embed import embed_files

    gallery_positions = np.asarray(gallery_positions)
    picked_l, kinds = plan_degradation(len(gallery_positions), spec, seed)
    picked = gallery_positions[picked_l]
    with tempfile.TemporaryDirectory(prefix="cmce-degrade-") as tmp:
        images, digests, boxes, points = [], [], [], []
        for i in picked:
            data = Path(embedded.paths[i]).read_bytes()
            images.append(load_image(data, name=embedded.paths[i]))
            digests.append(content_hash(data))
            f = embedded.faces[i]
            boxes.append(None if f is None else f.box)
            points.append(None if f is None else f.landmarks_array())
        paths = write_degraded(images, digests, list(kinds), seed, tmp, boxes, points)
        bad = embed_files(paths, list(models), detector=detector, cache=cache, progress=progress)
    faces = list(embedded.faces)
    emb = {m: v.copy() for m, v in embedded.embeddings.items()}
    kept_clean = {k: 0 for k in spec.kinds}
    too_small = {k: 0 for k in spec.kinds}
    degraded = np.zeros(len(faces), bool)
    for j, i in enumerate(picked):
        if bad.faces[j] is None:
            kept_clean[str(kinds[j])] += 1
            too_small[str(kinds[j])] += bool(bad.errors[j] and f"smaller than {MIN_FACE_PIXELS} px" in bad.errors[j])
            continue
        faces[i] = bad.faces[j]
        degraded[i] = True
        for m in models:
            emb[m][i] = bad.embeddings[m][j]
    report = {
        "spec": spec.text, "seed": seed, "share": spec.share, "kinds": list(spec.kinds),
        "gallery_photos": int(len(gallery_positions)), "picked": int(len(picked)),
        "degraded": int(degraded.sum()), "by_kind": {k: int((kinds == k).sum()) for k in spec.kinds},
        "kept_clean_no_face": kept_clean,
        # only when it happened: the reports of training's kinds (same-size copies) stay as they were
        **({"kept_clean_too_small": too_small} if any(too_small.values()) else {}),
    }
    logger.info("degraded %d of %d gallery photos (%s); %d kept clean (no face found in the degraded copy)",
                report["degraded"], len(gallery_positions), spec.text, sum(kept_clean.values()))
    return dataclasses.replace(embedded, faces=tuple(faces), embeddings=emb), report, degraded
