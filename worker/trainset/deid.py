"""Pseudonyms for exported training data: keyed hashes, never the values themselves.

The subject key is HMAC-SHA256 (RFC 2104) of the Patient ID under the site's secret
(``MEDSEG_TRAINING_EXPORT_SECRET``): the same patient always gets the same key, so splits by
subject stay by patient across exports, and without the secret nobody can test a guessed
Patient ID against a key (a plain hash of an ID could be). UIDs in the manifest are keyed
the same way, under their own prefix, so a key cannot be matched across the two kinds.
"""

from __future__ import annotations

import hashlib
import hmac

#: Hex digits kept of each keyed hash: 64 bits, no collision among any department's patients.
KEY_DIGITS = 16


class Pseudonyms:
    """Keyed hashes under one site secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError(
                "the training export secret must be 16 characters or more "
                "(set MEDSEG_TRAINING_EXPORT_SECRET)"
            )
        self._key = secret.encode()

    def _digest(self, kind: str, value: str) -> str:
        mac = hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:KEY_DIGITS]

    def subject(self, patient_id: str | None, study_uid: str) -> str:
        """The subject key: of the Patient ID, or of the study when the ID is missing (then
        one patient's studies are different subjects; the manifest says so)."""
        if patient_id and patient_id.strip():
            return self._digest("patient", patient_id.strip())
        return self._digest("study", study_uid)

    def uid(self, uid: str) -> str:
        """A UID's keyed hash, for the manifest."""
        return self._digest("uid", uid)
