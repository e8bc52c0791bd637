"""The "open in viewer" link: a site's viewer URL template filled with one study's UIDs.

``MEDSEG_VIEWER_URL_TEMPLATE`` names the study with ``{study_uid}`` and, optionally, the
series with ``{series_uid}``, for example OHIF
``https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}``. The UIDs are
URL-encoded when filled in.
"""

from __future__ import annotations

import string
from urllib.parse import quote

PLACEHOLDERS = frozenset({"study_uid", "series_uid"})


def check_template(template: str) -> str:
    """``template`` when it is an http(s) URL whose only placeholders are ours; else
    ValueError saying what to fix. Empty (no link) is valid."""
    if not template:
        return template
    if not template.startswith(("http://", "https://")):
        raise ValueError("MEDSEG_VIEWER_URL_TEMPLATE must start with http:// or https://")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"MEDSEG_VIEWER_URL_TEMPLATE: {exc} (write a brace as {{{{)") from exc
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"MEDSEG_VIEWER_URL_TEMPLATE: unknown placeholder(s) {sorted(unknown)}; use "
            "{study_uid} and {series_uid}"
        )
    if "study_uid" not in names and "series_uid" not in names:
        raise ValueError("MEDSEG_VIEWER_URL_TEMPLATE needs {study_uid} (or {series_uid})")
    return template


def viewer_url(template: str, study_uid: str, series_uid: str = "") -> str | None:
    """The link for one study (and series), or None when no template is set."""
    if not template:
        return None
    return template.format(
        study_uid=quote(study_uid, safe=""), series_uid=quote(series_uid, safe="")
    )
