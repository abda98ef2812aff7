"""The canonical byte form of a submission: what the resident's card signs and what is kept for audit.

    UTF-8 JSON, keys sorted, separators "," and ":" (no whitespace), non-ASCII as UTF-8 (no \\u
    escapes), of the object

    {
      "application_id": "...",
      "attachments": [ {"content_type": "...", "sha256": "<hex>", "size": <int>, "slot": "..."}, ... ]
                     (sorted by slot, sha256, size, content_type),
      "form": { ...the normalised form data... },
      "format": "onestop.application.submission.v1",
      "municipality_code": "<lgcode>",
      "procedure_code": "...",
      "resident_id": "...",
      "version": <int>
    }

`version` is the application's version when the bytes were made; every change to the form or the
attachments raises it, so a signature over older bytes never verifies against the current ones.
Form data holds only strings, integers, booleans, lists and objects (no floats), so the encoding is
unambiguous.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

FORMAT = "onestop.application.submission.v1"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def submission_bytes(*, application_id: str, procedure_code: str, municipality_code: str, resident_id: str,
                     version: int, form: Mapping[str, Any], attachments: Iterable[Mapping[str, Any]]) -> bytes:
    items = sorted(
        ({"slot": a["slot"], "sha256": a["sha256"], "size": int(a["size"]), "content_type": a["content_type"]}
         for a in attachments),
        key=lambda a: (a["slot"], a["sha256"], a["size"], a["content_type"]),
    )
    return canonical_json({
        "application_id": application_id,
        "attachments": items,
        "form": form,
        "format": FORMAT,
        "municipality_code": municipality_code,
        "procedure_code": procedure_code,
        "resident_id": resident_id,
        "version": int(version),
    })
