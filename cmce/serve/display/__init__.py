"""What the web demo shows, rendered from library objects (no Gradio here).

Three views, each a module: ``bundle_text`` (the bundle card, choices, the answer rule and
score help), ``gallery_view`` (the ingest report, framed tiles, the overview, rejection
figures) and ``result_view`` (face boxes, the side-by-side results as HTML and the same
results as a JSON-able dict for API clients), over ``text`` (small shared helpers). Every
function is a pure function of its arguments; the app only passes them on.

Two marks on gallery faces, never confused: **doubtful** (amber, dashed: the bundle's
quality score is above its calibrated threshold; the face is still searched) and
**rejected** (red: the face never matches, and a query whose best match it is answers
"Unknown" rather than naming the next person). Wrong matches are red too, but solid
and on a red background, and only in the results.
"""

from cmce.serve.display.bundle_text import (
    QUALITY_UNITS,
    RULE_DESCRIPTIONS,
    answer_rule_note,
    bundle_choice,
    bundle_markdown,
    readable_number,
    reprojection_markdown,
    score_choice_label,
    threshold_help,
    unknown_rule_text,
)
from cmce.serve.display.gallery_view import (
    DOUBTFUL_AMBER,
    ORDERS,
    REJECTED_PURPLE,
    entry_caption,
    entry_tile,
    index_report_dict,
    index_report_markdown,
    label_preview_markdown,
    overview_summary,
    overview_tiles,
    rejected_entries,
    restore_dict,
    restore_markdown,
    risk_coverage_figure,
    risk_coverage_note,
    scoreboard_markdown,
    uncertainty_figure,
)
from cmce.serve.display.result_view import (
    annotate_faces,
    face_choices,
    match_photo_image,
    result_dict,
    result_html,
    view_title,
)

__all__ = [
    "DOUBTFUL_AMBER",
    "ORDERS",
    "QUALITY_UNITS",
    "REJECTED_PURPLE",
    "RULE_DESCRIPTIONS",
    "annotate_faces",
    "answer_rule_note",
    "bundle_choice",
    "bundle_markdown",
    "entry_caption",
    "entry_tile",
    "face_choices",
    "match_photo_image",
    "index_report_dict",
    "index_report_markdown",
    "label_preview_markdown",
    "overview_summary",
    "overview_tiles",
    "readable_number",
    "rejected_entries",
    "reprojection_markdown",
    "restore_dict",
    "restore_markdown",
    "result_dict",
    "result_html",
    "risk_coverage_figure",
    "risk_coverage_note",
    "score_choice_label",
    "scoreboard_markdown",
    "threshold_help",
    "uncertainty_figure",
    "unknown_rule_text",
    "view_title",
]
