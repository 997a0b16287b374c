"""Gradio components the demo needs to behave differently from Gradio's own.

:func:`without_stray_files` fixes ``gr.File``'s stray temporary files: Gradio 6's
``File._process_single_file`` opens ``tempfile.NamedTemporaryFile(delete=False,
dir=GRADIO_CACHE)`` for every file of every event and never writes, closes or deletes it,
so each indexing request left one zero-byte ``tmp*`` file per uploaded file in the upload
cache (and an open descriptor until garbage collection). The fix replaces that one method
on the given component (a subclass of a Gradio component would make Gradio write a
``.pyi`` stub beside this module at import); the file-type check and the value passed to
the handler are ``gr.File``'s.
"""

from __future__ import annotations

import types

import gradio as gr
from gradio.data_classes import FileData
from gradio.exceptions import Error
from gradio.utils import NamedString
from gradio_client import utils as client_utils

__all__ = ["without_stray_files"]


def _process_single_file(self: gr.File, f: FileData) -> NamedString | bytes:
    """``gr.File._process_single_file`` for ``type="filepath"``, less the empty temporary file."""
    if self.file_types and not client_utils.is_valid_file(f.path, self.file_types):
        raise Error(f"Invalid file type. Please upload a file that is one of these formats: {self.file_types}")
    return NamedString(f.path)


def without_stray_files(component: gr.File) -> gr.File:
    """``component`` (a ``gr.File`` of ``type="filepath"``), made to leave no empty file per upload.

    Raises:
        ValueError: another component or type.
    """
    if not isinstance(component, gr.File) or component.type != "filepath":
        raise ValueError(f"without_stray_files needs a gr.File of type 'filepath', got {component!r}")
    component._process_single_file = types.MethodType(_process_single_file, component)
    return component
