"""Port dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to PyTorch.

The ``.dat`` file is dlib's binary ``serialize()`` of the network type of
``dnn_face_recognition_ex.cpp``::

    loss_metric<fc_no_bias<128,avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,
        input_rgb_image_sized<150>>>>>>>>>>>>>

    ares<N>      = relu<add_prev1<block<N,1,tag1<SUBNET>>>>
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,2,tag1<SUBNET>>>>>>>
    block<N,s>   = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,s,s,SUBNET>>>>>
    alevel0 = ares_down<256>            alevel1 = ares<256>,ares<256>,ares_down<256>
    alevel2 = ares<128>x2,ares_down<128>  alevel3 = ares<64>x3,ares_down<64>
    alevel4 = ares<32>x3

This module reads that file with numpy only (no dlib) and loads the weights into
:class:`DlibResNet34Torch`.  What the file holds, from dlib's sources
(``serialize.h``, ``float_details.h``, ``dnn/core.h``, ``dnn/layers.h``,
``dnn/tensor.h``, ``dnn/input.h``, ``dnn/loss.h``):

* **Integers** (``int``, ``long``, ...): one control byte -- low 4 bits = number of
  bytes that follow, bit 7 = negative (signed types) -- then the absolute value,
  little endian.  ``bool`` is the ASCII byte ``'1'`` or ``'0'``.  A string is its
  length (integer) then the raw bytes.
* **Floats / doubles** (input means, loss margins, learning-rate multipliers):
  ``float_details``: the integer ``mantissa`` (int64) *then* the integer
  ``exponent`` (int16); value = ``mantissa * 2**exponent`` (exponents 32000/32001/
  32002 mean inf/-inf/nan).  A first byte with any bit of 0x70 set would mean the
  pre-2013 ASCII float format, which is refused.
* **Tensors** (``resizable_tensor``): version 2 = ``n, k, nr, nc`` (longs) then
  ``n*k*nr*nc`` little-endian IEEE float32s; version 1 (older files) stores every
  value as a ``float_details``.  ``alias_tensor``: version 1, ``n, k, nr, nc``.
* **Network**: ``add_loss_layer`` writes ``1, loss, subnet``; ``add_layer`` writes
  ``version, subnet, details, 3 bools, x_grad, cached_output[, params_grad]`` (the
  bottom one, over the input layer: ``version, input_layer, details, 3 bools,
  x_grad, cached_output, grad_final[, sample_expansion_factor]``); ``add_tag_layer``
  and ``add_skip_layer`` write ``1, subnet``.  So the file is a run of version
  numbers from the top layer down, the input layer, then every layer's details
  from the bottom up.
* **Layers**: ``con_4..6`` (params = OIHW filters then biases, plus the stored
  padding, which dlib checks equals its default ``stride != 1 ? 0 : size/2``, so
  the stride-2 convs and the 3x3/2 max pool are *unpadded*); ``affine_``/
  ``affine_2`` (``y = gamma*x + beta`` per channel; a ``bn_con2`` in its place,
  which dlib would convert, is refused: the released model has none); ``max_pool_2``/``avg_pool_2``
  (clipped windows: max/mean over the valid part only); ``fc_2`` (params =
  ``num_inputs x num_outputs`` row major, ``out = x @ W``); ``relu_``;
  ``add_prev_``; ``input_rgb_image_sized`` (``(pixel - avg[c]) / 256``, RGB
  averages 122.782, 117.001, 104.298); ``loss_metric_2`` (margin, threshold).

Two details PyTorch does differently by default:

* dlib's output size is ``1 + (n + 2*pad - k) // stride`` (PyTorch's floor mode),
  and ``add_prev`` adds tensors of *different* shapes by zero-padding the smaller
  one at the end of every dimension (``tt::add``).  This matters: in ``alevel1``'s
  down block the residual branch is 3x3 (unpadded stride-2 conv on 8x8) while the
  2x2/2 average-pooled shortcut is 4x4, so the sum is 4x4 with the branch only in
  the top-left 3x3; likewise 1x1 + 2x2 in ``alevel0``, and the shortcut's channels
  (e.g. 32 -> 64) are zero-padded.
* ``avg_pool_everything`` then averages that whole 2x2 map (zeros included).

The descriptor is the raw ``fc_no_bias`` output, **not** L2-normalised (dlib does
not normalise it either; its 0.6 threshold is on Euclidean distance).  Callers
normalise if they want cosine similarity.

Each ``affine`` follows a ``con`` directly, so it is folded into that conv
(computed in float64, stored float32): the same function, one op fewer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmce.errors import BackboneError
from cmce.models.backbones.base import check_state_dict, read_weight_file

logger = logging.getLogger(__name__)

__all__ = [
    "DlibNetFile",
    "DlibResNet34Torch",
    "chips_to_tensor",
    "convert_dlib_resnet",
    "load_dlib_resnet_torch",
    "read_dlib_net",
]

CHIP_SIZE = 150
# (channels, first block of the level is a down block) bottom-up, from alevel4 to alevel0
_LEVELS: list[tuple[int, int, bool]] = [(32, 3, False), (64, 4, True), (128, 3, True),
                                       (256, 3, True), (256, 1, True)]
_FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


# ----------------------------------------------------------------------------------------
# Network type: the token list dlib's serialize() walks, top layer first.


@dataclass(frozen=True)
class _Tok:
    """One node of the network type: an ``add_layer`` (kind = layer name), tag or skip."""

    kind: str  # "con", "affine", "relu", "max_pool", "avg_pool", "fc", "add_prev", "tag", "skip"
    args: tuple[int, ...] = ()


def _block(n: int, stride: int) -> list[_Tok]:
    return [_Tok("affine"), _Tok("con", (n, 3, 3, 1, 1)), _Tok("relu"), _Tok("affine"),
            _Tok("con", (n, 3, 3, stride, stride))]


def _ares(n: int) -> list[_Tok]:
    return [_Tok("relu"), _Tok("add_prev", (1,)), *_block(n, 1), _Tok("tag", (1,))]


def _ares_down(n: int) -> list[_Tok]:
    return [_Tok("relu"), _Tok("add_prev", (2,)), _Tok("avg_pool", (2, 2, 2, 2)), _Tok("skip", (1,)),
            _Tok("tag", (2,)), *_block(n, 2), _Tok("tag", (1,))]


def _network_tokens() -> list[_Tok]:
    """``anet_type`` of dnn_face_recognition_ex.cpp below the loss, top layer first."""
    toks = [_Tok("fc", (128,)), _Tok("avg_pool", (0, 0, 1, 1))]
    for n, count, down in reversed(_LEVELS):
        for i in range(count):
            toks += _ares_down(n) if down and i == count - 1 else _ares(n)
    toks += [_Tok("max_pool", (3, 3, 2, 2)), _Tok("relu"), _Tok("affine"), _Tok("con", (32, 7, 7, 2, 2))]
    return toks


def _default_padding(size: int, stride: int) -> int:
    """dlib's template default for con_/max_pool_/avg_pool_ padding."""
    return 0 if stride != 1 else size // 2


# ----------------------------------------------------------------------------------------
# Low-level reader for dlib's serialization format.


class _FormatError(Exception):
    """Internal: the bytes do not match what dlib would have written."""


class _Reader:
    """Cursor over the bytes of a dlib-serialized object."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _FormatError(f"unexpected end of file (wanted {n} bytes at offset {self.pos})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def integer(self, signed: bool = True, max_bytes: int = 8) -> int:
        """dlib integer: control byte (bit 7 = negative, low 4 bits = size), LE magnitude."""
        at = self.pos
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F  # bits 0x70 are reserved; dlib's unpack_int ignores them
        negative = bool(ctrl & 0x80)
        if size > max_bytes or (negative and not signed):
            raise _FormatError(f"invalid integer control byte 0x{ctrl:02x} at offset {at}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if negative else value

    def uinteger(self, max_bytes: int = 8) -> int:
        return self.integer(signed=False, max_bytes=max_bytes)

    def boolean(self) -> bool:
        at = self.pos
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise _FormatError(f"invalid bool byte {ch!r} at offset {at}")
        return ch == b"1"

    def string(self, max_len: int = 256) -> str:
        at = self.pos
        n = self.uinteger()
        if n > max_len:
            raise _FormatError(f"implausible string length {n} at offset {at}")
        try:
            return self._take(n).decode("ascii")
        except UnicodeDecodeError as exc:
            raise _FormatError(f"non-ASCII string at offset {at}") from exc

    def expect(self, *names: str) -> str:
        at = self.pos
        name = self.string()
        if name not in names:
            raise _FormatError(f"expected {' or '.join(map(repr, names))} at offset {at}, found {name!r}")
        return name

    def floating(self) -> float:
        """A float/double written as ``float_details``: mantissa (int64) then exponent (int16)."""
        at = self.pos
        if at < len(self.buf) and self.buf[at] & 0x70:
            raise _FormatError(f"old ASCII float format at offset {at} is not supported")
        mantissa = self.integer(max_bytes=8)
        exponent = self.integer(max_bytes=2)
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return math.ldexp(float(mantissa), exponent)

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        at = self.pos
        v = self.integer(max_bytes=4)
        if v not in allowed:
            raise _FormatError(f"{what}: unexpected version {v} at offset {at} (dlib accepts {allowed})")
        return v

    def tensor(self) -> np.ndarray:
        """``resizable_tensor`` as float32 array of shape (n, k, nr, nc)."""
        v = self.version((1, 2), "resizable_tensor")
        dims = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in dims):
            raise _FormatError(f"negative tensor dimensions {dims}")
        count = int(np.prod(dims, dtype=np.int64))
        if v == 2:
            raw = self._take(4 * count)
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)
        values = np.array([self.floating() for _ in range(count)], dtype=np.float32)
        return values.reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.version((1,), "alias_tensor")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------
# Layer details.


@dataclass
class DlibLayer:
    """One computational layer read from the file (bottom-up order)."""

    kind: str
    args: tuple[int, ...] = ()
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    padding: tuple[int, int] = (0, 0)


@dataclass
class DlibNetFile:
    """Everything the converter needs from a ``.dat`` file."""

    input_means: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]  # computational layers, input side first (tags/skips omitted)
    loss: str
    margin: float
    dist_thresh: float


def _read_con(r: _Reader, args: tuple[int, ...]) -> DlibLayer:
    version = r.expect("con_4", "con_5", "con_6")
    params = r.tensor().reshape(-1)
    num_filters = r.integer()
    nr, nc = r.integer(), r.integer()
    sy, sx = r.integer(max_bytes=4), r.integer(max_bytes=4)
    py, px = r.integer(max_bytes=4), r.integer(max_bytes=4)
    filt = r.alias_tensor()
    bias = r.alias_tensor()
    for _ in range(4):  # learning-rate / weight-decay multipliers
        r.floating()
    use_bias = r.boolean() if version in ("con_5", "con_6") else True
    use_relu = r.boolean() if version == "con_6" else False
    want_n, want_nr, want_nc, want_sy, want_sx = args
    if (num_filters, nr, nc, sy, sx) != (want_n, want_nr, want_nc, want_sy, want_sx):
        raise _FormatError(f"con: found {num_filters} filters {nr}x{nc} stride {sy},{sx}; expected "
                           f"{want_n} filters {want_nr}x{want_nc} stride {want_sy},{want_sx}")
    if (py, px) != (_default_padding(nr, sy), _default_padding(nc, sx)):
        raise _FormatError(f"con {nr}x{nc}/{sy}: padding ({py},{px}) is not dlib's default")
    if use_relu:
        raise _FormatError("con with fused relu is not part of this network")
    n_f = int(np.prod(filt))
    if filt[0] != num_filters or filt[2:] != (nr, nc):
        raise _FormatError(f"con filter shape {filt} does not fit {num_filters}x?x{nr}x{nc}")
    n_b = int(np.prod(bias)) if use_bias else 0
    if use_bias and n_b != num_filters:
        raise _FormatError(f"con bias shape {bias} does not fit {num_filters} filters")
    if params.size != n_f + n_b:
        raise _FormatError(f"con params hold {params.size} values, filters+biases need {n_f + n_b}")
    w = params[:n_f].reshape(filt)
    b = params[n_f:] if use_bias else np.zeros(num_filters, np.float32)
    return DlibLayer("con", args, {"weight": w, "bias": b}, (py, px))


def _read_affine(r: _Reader) -> DlibLayer:
    name = r.expect("affine_", "affine_2", "bn_con2", "bn_fc2")
    if name.startswith("bn_"):
        raise _FormatError(f"{name}: a training-time batch-norm layer where the released model "
                           "has affine layers is not supported")
    params = r.tensor().reshape(-1)
    g_shape, b_shape = r.alias_tensor(), r.alias_tensor()
    mode = r.integer(max_bytes=4)
    disabled = r.boolean() if name == "affine_2" else False
    if disabled:
        raise _FormatError("disabled affine layer is not part of this network")
    if mode != 0:  # CONV_MODE == 0: one gamma/beta per channel
        raise _FormatError(f"affine layer in mode {mode}; expected CONV_MODE (0)")
    n_g = int(np.prod(g_shape))
    if g_shape != b_shape or params.size != 2 * n_g or g_shape[0] != 1 or g_shape[2:] != (1, 1):
        raise _FormatError(f"affine shapes {g_shape}/{b_shape} do not fit {params.size} params")
    return DlibLayer("affine", (), {"gamma": params[:n_g].copy(), "beta": params[n_g:].copy()})


def _read_pool(r: _Reader, kind: str, args: tuple[int, ...]) -> DlibLayer:
    r.expect(f"{kind}_2")
    nr, nc = r.integer(), r.integer()
    sy, sx = r.integer(max_bytes=4), r.integer(max_bytes=4)
    py, px = r.integer(max_bytes=4), r.integer(max_bytes=4)
    if (nr, nc, sy, sx) != args:
        raise _FormatError(f"{kind}: found {nr}x{nc} stride {sy},{sx}; expected {args}")
    if (py, px) != (_default_padding(nr, sy), _default_padding(nc, sx)):
        raise _FormatError(f"{kind} {nr}x{nc}/{sy}: padding ({py},{px}) is not dlib's default")
    return DlibLayer(kind, args, padding=(py, px))


def _read_fc(r: _Reader, args: tuple[int, ...]) -> DlibLayer:
    r.expect("fc_2")
    num_outputs, num_inputs = r.uinteger(), r.uinteger()
    params = r.tensor().reshape(-1)
    w_shape, _b_shape = r.alias_tensor(), r.alias_tensor()
    bias_mode = r.integer(max_bytes=4)
    for _ in range(4):
        r.floating()
    if num_outputs != args[0] or bias_mode != 1:  # FC_NO_BIAS == 1
        raise _FormatError(f"fc: {num_outputs} outputs, bias mode {bias_mode}; expected {args[0]}, no bias")
    if w_shape[:2] != (num_inputs, num_outputs) or params.size != num_inputs * num_outputs:
        raise _FormatError(f"fc weight shape {w_shape} / {params.size} params do not fit "
                           f"{num_inputs}x{num_outputs}")
    return DlibLayer("fc", args, {"weight": params.reshape(num_inputs, num_outputs)})


def _read_details(r: _Reader, tok: _Tok) -> DlibLayer:
    if tok.kind == "con":
        return _read_con(r, tok.args)
    if tok.kind == "affine":
        return _read_affine(r)
    if tok.kind in ("max_pool", "avg_pool"):
        return _read_pool(r, tok.kind, tok.args)
    if tok.kind == "fc":
        return _read_fc(r, tok.args)
    if tok.kind == "relu":
        r.expect("relu_")
        return DlibLayer("relu")
    if tok.kind == "add_prev":
        r.expect("add_prev_")
        return DlibLayer("add_prev", tok.args)
    raise AssertionError(tok)


def _walk(r: _Reader, toks: list[_Tok], i: int, out: list[DlibLayer]) -> tuple[tuple[float, float, float], tuple[int, int]]:
    """Deserialize ``toks[i:]`` (top-down) like dlib's recursive deserialize(); details go to ``out``.

    Recursion depth is the token count (130), well inside Python's limit.
    """
    tok = toks[i]
    if tok.kind in ("tag", "skip"):
        r.version((1,), f"add_{tok.kind}_layer")
        return _walk(r, toks, i + 1, out)
    if i == len(toks) - 1:  # add_layer over the input layer
        v = r.version((2, 3), "add_layer (input)")
        r.expect("input_rgb_image_sized")
        means = (r.floating(), r.floating(), r.floating())
        size = (r.uinteger(), r.uinteger())
        out.append(_read_details(r, tok))
        _layer_trailer(r)
        r.tensor()  # grad_final
        if v >= 3:
            r.uinteger(max_bytes=4)  # sample_expansion_factor
        return means, size
    v = r.version((1, 2), "add_layer")
    result = _walk(r, toks, i + 1, out)
    out.append(_read_details(r, tok))
    _layer_trailer(r)
    if v == 2:
        r.tensor()  # params_grad
    return result


def _layer_trailer(r: _Reader) -> None:
    """this_layer_setup_called, gradient_input_is_stale, output disabled, x_grad, cached_output."""
    for _ in range(3):
        r.boolean()
    r.tensor()
    r.tensor()


def read_dlib_net(dat_path: str | Path) -> DlibNetFile:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` (numpy only, no dlib).

    Args:
        dat_path: Path of the ``.dat`` file (uncompressed, as in ``face_recognition_models``).

    Returns:
        The input normalisation, the computational layers (input side first) and the
        loss parameters.

    Raises:
        BackboneError: If the file is missing, unreadable, or is not a dlib
            serialization of the face recognition ResNet (``anet_type``).
    """
    path = Path(dat_path)
    buf = read_weight_file(path, "dlib face recognition model")
    if buf[:3] == b"BZh":
        raise BackboneError(f"{path} is bzip2-compressed; decompress it first (bunzip2)")
    r = _Reader(buf)
    layers: list[DlibLayer] = []
    try:
        r.version((1,), "add_loss_layer")
        loss = r.expect("loss_metric_", "loss_metric_2")
        margin, thresh = (r.floating(), r.floating()) if loss == "loss_metric_2" else (0.1, 0.75)
        means, size = _walk(r, _network_tokens(), 0, layers)
    except _FormatError as exc:
        raise BackboneError(f"{path} is not dlib's face recognition ResNet "
                            f"(dlib_face_recognition_resnet_model_v1 layout): {exc}") from exc
    if r.pos != len(buf):
        raise BackboneError(f"{path}: {len(buf) - r.pos} unexpected trailing bytes after the network")
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise BackboneError(f"{path}: input size {size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
    logger.debug("Parsed %d layers from %s (input means %s)", len(layers), path, means)
    return DlibNetFile(means, size, layers, loss, margin, thresh)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# PyTorch model.


def _zero_pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``tt::add`` of two NCHW tensors: the smaller is zero-padded at the end of C, H, W."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    a = F.pad(a, (0, w - a.shape[3], 0, h - a.shape[2], 0, c - a.shape[1]))
    b = F.pad(b, (0, w - b.shape[3], 0, h - b.shape[2], 0, c - b.shape[1]))
    return a + b


class _ResBlock(nn.Module):
    """``ares`` / ``ares_down`` with each affine folded into the conv before it."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_zero_pad_add(y, shortcut))


class DlibResNet34Torch(nn.Module):
    """dlib's face recognition ResNet in PyTorch.

    ``forward`` takes float RGB chips ``(N, 3, 150, 150)`` with values 0..255 (as
    produced by dlib's ``get_face_chip``; see :func:`chips_to_tensor` for uint8 NHWC
    arrays) and returns the raw ``(N, 128)`` descriptor, exactly dlib's
    ``compute_face_descriptor`` (not L2-normalised).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks = []
        cin = 32
        for n, count, down in _LEVELS:
            for i in range(count):
                blocks.append(_ResBlock(cin, n, down and i == 0))
                cin = n
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.conv1(x)), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def chips_to_tensor(chips: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 RGB chips ``(N, 150, 150, 3)`` -> float32 ``(N, 3, 150, 150)`` on ``device``.

    Raises:
        BackboneError: If the array is not ``(N, 150, 150, 3)``.
    """
    arr = np.asarray(chips)
    if arr.ndim != 4 or arr.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise BackboneError(f"dlib chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) RGB, got {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    return t.permute(0, 3, 1, 2).float()


def _fold(con: DlibLayer, aff: DlibLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv followed by a per-channel affine -> one conv (float64 maths, float32 result)."""
    g = aff.weights["gamma"].reshape(-1).astype(np.float64)
    b = aff.weights["beta"].reshape(-1).astype(np.float64)
    w = con.weights["weight"].astype(np.float64)
    if g.size != w.shape[0]:
        raise BackboneError(f"affine has {g.size} channels after a conv with {w.shape[0]} filters")
    weight = (w * g[:, None, None, None]).astype(np.float32)
    bias = (con.weights["bias"].astype(np.float64) * g + b).astype(np.float32)
    return torch.from_numpy(weight), torch.from_numpy(bias)


def convert_dlib_resnet(dat_path: str | Path) -> dict[str, torch.Tensor]:
    """Convert the ``.dat`` file into a :class:`DlibResNet34Torch` state dict.

    Raises:
        BackboneError: If the file cannot be parsed or a shape does not fit.
    """
    net = read_dlib_net(dat_path)
    layers = iter(net.layers)

    def take(kind: str) -> DlibLayer:
        layer = next(layers)
        if layer.kind != kind:  # cannot happen after read_dlib_net's checks
            raise BackboneError(f"layer order: expected {kind}, found {layer.kind}")
        return layer

    sd: dict[str, torch.Tensor] = {"mean": torch.tensor(net.input_means, dtype=torch.float32).reshape(1, 3, 1, 1)}
    sd["conv1.weight"], sd["conv1.bias"] = _fold(take("con"), take("affine"))
    take("relu")
    take("max_pool")
    idx = 0
    for _n, count, down in _LEVELS:
        for i in range(count):
            is_down = down and i == 0
            pre = f"blocks.{idx}"
            sd[f"{pre}.conv1.weight"], sd[f"{pre}.conv1.bias"] = _fold(take("con"), take("affine"))
            take("relu")
            sd[f"{pre}.conv2.weight"], sd[f"{pre}.conv2.bias"] = _fold(take("con"), take("affine"))
            if is_down:
                take("avg_pool")
            take("add_prev")
            take("relu")
            idx += 1
    take("avg_pool")
    sd["fc.weight"] = torch.from_numpy(np.ascontiguousarray(take("fc").weights["weight"].T))
    if next(layers, None) is not None:
        raise BackboneError("extra layers after the fc layer")

    check_state_dict(sd, DlibResNet34Torch().state_dict(), "DlibResNet34Torch")
    logger.info("Converted %d tensors from %s", len(sd), dat_path)
    return sd


def load_dlib_resnet_torch(dat_path: str | Path, cache: str | Path | None = None,
                           device: str | torch.device = "cpu") -> DlibResNet34Torch:
    """Build the PyTorch model from the ``.dat`` file, in eval mode.

    Args:
        dat_path: ``dlib_face_recognition_resnet_model_v1.dat``.
        cache: Optional ``.safetensors`` path: loaded when present and valid, else
            written after converting (atomically).  Key it by the ``.dat``'s sha256.
        device: Where to put the model.

    Raises:
        BackboneError: If the file is not the expected dlib network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save

    from cmce.cache import atomic_write_bytes

    model = DlibResNet34Torch()
    state: dict[str, torch.Tensor] | None = None
    if cache is not None and Path(cache).is_file():
        try:
            state = load_file(str(cache))
            model.load_state_dict(state, strict=True)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:  # corrupt/stale: convert again
            logger.warning("ignoring unusable converted weights %s: %s", cache, exc)
            state = None
    if state is None:
        state = convert_dlib_resnet(dat_path)
        model.load_state_dict(state, strict=True)
        if cache is not None:
            atomic_write_bytes(cache, save({k: v.contiguous() for k, v in state.items()}))
            logger.info("cached converted dlib ResNet at %s", cache)
    return model.eval().to(device)

