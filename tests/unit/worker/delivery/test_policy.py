"""The delivery policy: which results a destination gets, before and after a review."""

from __future__ import annotations

import pytest

from worker.core.settings import DeliveryPolicy, DicomDestination
from worker.delivery.policy import withhold_reason

STRICT = DeliveryPolicy()
OPEN = DeliveryPolicy(send_needs_review=True, send_not_validated=True)


def test_pacs_destinations_are_strict_by_default() -> None:
    pacs = DicomDestination(name="pacs", ae_title="PACS", host="h", port=104)
    assert not pacs.send_needs_review and not pacs.send_not_validated


@pytest.mark.parametrize(
    ("policy", "flagged", "validation", "decision", "withheld"),
    [
        (STRICT, False, "validated-real", None, None),
        (STRICT, False, "reference-only", None, None),
        (STRICT, True, "validated-real", None, "needs review"),
        (STRICT, True, "validated-real", "accepted", None),
        (STRICT, False, "phantom-only", None, "phantom-only result, not for clinical use"),
        (STRICT, True, "phantom-only", "accepted", "phantom-only result"),
        (STRICT, False, "unvalidated", None, "unvalidated result"),
        (STRICT, False, None, None, "unknown result"),
        (OPEN, True, "phantom-only", None, None),
        (OPEN, True, "validated-real", "rejected", "rejected by a reviewer"),
        (DeliveryPolicy(send_not_validated=True), True, "phantom-only", None, "needs review"),
    ],
)
def test_withhold_reason(
    policy: DeliveryPolicy,
    flagged: bool,
    validation: str | None,
    decision: str | None,
    withheld: str | None,
) -> None:
    reason = withhold_reason(policy, flagged=flagged, validation=validation, decision=decision)
    if withheld is None:
        assert reason is None
    else:
        assert reason is not None and withheld in reason and reason.startswith("withheld: ")
