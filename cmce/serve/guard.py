"""No blank error and no leak: what stands between a stranger's input and the demo's handlers.

* :class:`GuardedBlocks` (the app's ``gr.Blocks``) names every failure: an input that a
  component cannot read (a string where a file belongs, a value outside a dropdown's
  choices, too few inputs) and an exception a handler did not foresee both come back as a
  ``gr.Error`` that says what went wrong, where Gradio alone answers ``{"error": null}`` and a
  bare red "Error".
* :func:`query_photo` is ``gr.Image`` that hands the handler the uploaded file's path without
  opening it: ``gr.Image`` opens every upload with Pillow (converting it to RGB, decoding every
  pixel) before the app's own size and pixel checks (``cmce.io.images.load_image``) could refuse it.
* :func:`user_error` is the ``gr.Error`` of a user's mistake: no traceback in the server's log,
  no absolute server path, echoed input cut to :data:`ECHO_CHARS` characters (:func:`clean`).

Needs the ``app`` extra (gradio).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from cmce.io.images import DEFAULT_LIMITS, ImageLimits, format_bytes

__all__ = ["ECHO_CHARS", "GuardedBlocks", "clean", "clip", "counted", "query_photo", "user_error"]

logger = logging.getLogger("cmce.app")

ECHO_CHARS = 100
"""Most characters of a user's input repeated in a message."""

# an absolute path: a "/" that starts a word (not the "//" of a URL, nor the "/" of org/name), then
# one or more folders; the last part (the file's own name) is kept
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(?:/[\w.\-+@%~]+)+/([\w.\-+@%~]+)")
_LONG_RUN = re.compile(r"\S{%d,}" % (ECHO_CHARS + 1))  # an echoed value without spaces, longer than ECHO_CHARS


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (a noun whose plural adds an s).

    >>> counted(1, "face"), counted(3, "face"), counted(0, "gallery face")
    ('1 face', '3 faces', '0 gallery faces')
    """
    return f"{n} {noun}{'' if n == 1 else 's'}"


def clip(text: object, limit: int = ECHO_CHARS) -> str:
    """``text`` as a string of at most ``limit`` characters (an ellipsis marks a cut).

    >>> clip("x" * 1_000_000)[-3:], len(clip("x" * 1_000_000))
    ('xx…', 100)
    """
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clean(text: object, limit: int = 400) -> str:
    """A message fit for a stranger: every absolute path cut to its last part, every run of more than
    ``ECHO_CHARS`` characters without a space (an echoed value) cut to ``ECHO_CHARS``, at most ``limit``
    characters in all.

    >>> clean("cannot read /tmp/gradio/0b1c/photo.png (No such file)")
    'cannot read photo.png (No such file)'
    >>> clean("see org/name at https://huggingface.co/org/name")
    'see org/name at https://huggingface.co/org/name'
    >>> len(clean("Value: '" + "x" * 10**6 + "' is not in the list of choices: ['none', 'rate']"))
    155
    """
    text = _ABSOLUTE_PATH.sub(r"\1", str(text))
    return clip(_LONG_RUN.sub(lambda m: clip(m.group(0)), text), limit)


def user_error(message: object, title: str = "Error") -> gr.Error:
    """The ``gr.Error`` of a user's mistake: shown in the page and through the API, never a traceback in the log."""
    return gr.Error(clean(message), title=title, print_exception=False)


def _short_error(error: BaseException) -> str:
    """An exception in one line: its type and the start of its message, paths removed."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    return clean(f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__, ECHO_CHARS * 2)


class GuardedBlocks(gr.Blocks):
    """``gr.Blocks`` whose every failure comes back named (see the module's docstring).

    An input a component cannot read is the caller's mistake: told which input, logged in one
    line. An exception a handler let through is the app's: told in one line, logged with its
    traceback (the operator's to fix), never a blank error.
    """

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):  # noqa: D102
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error as e:  # a component's own refusal (a value outside a dropdown's choices): cut and cleaned
            raise user_error(e.message, title=e.title) from None
        except Exception as e:  # noqa: BLE001 - any unreadable input is the caller's mistake
            what = _input_names(block_fn)
            logger.info("refused unreadable input to %s: %s", _fn_name(block_fn), _short_error(e))
            raise user_error(f"Could not read the inputs of {_fn_name(block_fn)} ({_short_error(e)}). "
                             f"Expected: {what}.") from None

    async def call_function(self, block_fn, *args: Any, **kwargs: Any):  # noqa: D102
        try:
            return await super().call_function(block_fn, *args, **kwargs)
        except gr.Error as e:
            if e.print_exception:  # a handler's gr.Error: cleaned, cut, and no traceback for a user's mistake
                raise user_error(e.message, title=e.title) from None
            raise
        except Exception as e:  # noqa: BLE001 - the app's bug: logged in full, told in one line
            name = _fn_name(block_fn)
            logger.exception("%s failed", name)
            raise gr.Error(f"{name} failed ({_short_error(e)}). The session is unchanged; please try again, "
                           "or with another photo.", print_exception=False) from None


def _fn_name(block_fn) -> str:
    name = getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "this action"
    return str(name).lstrip("/")


def _input_names(block_fn) -> str:
    """The inputs of an event, as the API names them (``label (Component)``)."""
    names = []
    for block in getattr(block_fn, "inputs", []) or []:
        if getattr(block, "stateful", False):
            continue
        label = getattr(block, "label", None) or block.__class__.__name__
        names.append(f"{clip(label, 40)} ({block.__class__.__name__})")
    return ", ".join(names) or "no inputs"


def query_photo(*, limits: ImageLimits = DEFAULT_LIMITS, **kwargs: Any) -> gr.Image:
    """``gr.Image(type="filepath", **kwargs)`` that never opens the upload: the handler gets its path.

    ``gr.Image`` opens every upload with Pillow and, when its mode is not ``image_mode`` (RGB by
    default), converts it, which decodes every pixel of a decompression bomb before the app can
    look at its header. This one hands the uploaded file's path to the handler untouched; a
    ``data:`` URL (which API callers may send) is written to a file as it is, at most
    ``limits.max_bytes`` of it, undecoded. The page shows it as any ``gr.Image`` (the browser
    draws the preview).

    The component's ``preprocess`` is replaced on this instance (a subclass would make Gradio write a
    ``.pyi`` stub beside this module at import). Gradio re-creates a component that a handler
    updates with ``gr.update(...)`` for that session, without this replacement: return a plain value
    (a path) to set the photo, never an update.
    """
    image = gr.Image(type="filepath", **kwargs)
    image.preprocess = partial(_undecoded_path, image, limits)  # type: ignore[method-assign]
    return image


def _undecoded_path(image: gr.Image, limits: ImageLimits, payload) -> str | None:
    """The uploaded file's path (or a data URL written to a file), nothing decoded."""
    if payload is None:
        return None
    url = getattr(payload, "url", None)
    if url and url.startswith("data:"):
        return _data_url_file(url, Path(image.GRADIO_CACHE), limits)
    if payload.path is None:
        raise user_error("The photo arrived without its file; upload it again.")
    return str(payload.path)


def _data_url_file(url: str, folder: Path, limits: ImageLimits) -> str:
    """A ``data:...;base64,`` photo written, undecoded, to a file of ``folder``."""
    head, _, body = url.partition(",")
    if ";base64" not in head:
        raise user_error("A photo sent as a data URL must be base64-encoded (data:image/png;base64,...).")
    if len(body) > (limits.max_bytes * 4) // 3 + 4:
        raise user_error(f"The photo is larger than the limit of {format_bytes(limits.max_bytes)}.")
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise user_error("The photo's data URL is not valid base64.") from None
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix="query-", suffix=".img", delete=False) as out:
        out.write(data)
    return out.name
