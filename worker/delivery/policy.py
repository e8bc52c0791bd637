"""Which results a destination gets (``DeliveryPolicy``): the one place that decides whether
a delivery is sent or withheld, at the result's recording and again at a reviewer's decision.
"""

from __future__ import annotations

from collections.abc import Sequence

from db.supersede import WITHHELD_SUPERSEDED
from worker.core.card import not_for_clinical_use
from worker.core.settings import DeliveryPolicy, DicomDestination

SENDER = "sender"  # the delivery destination that means "the AE the study came from"
ACCEPTED = "accepted"
REJECTED = "rejected"


def policy_for(name: str, destinations: Sequence[DicomDestination]) -> DeliveryPolicy | None:
    """The policy of destination ``name``; None when it is no longer configured."""
    if name == SENDER:
        return DeliveryPolicy()
    return next((d for d in destinations if d.name == name), None)


def withhold_reason(
    policy: DeliveryPolicy,
    *,
    flagged: bool,
    validation: str | None,
    decision: str | None = None,
    superseded: bool = False,
) -> str | None:
    """Why ``policy``'s destination must not get the result; None: send it.

    A rejected result is never sent. A flagged one is sent once a reviewer accepted it, or
    before that when the destination takes ``send_needs_review``. A not-for-clinical-use one
    (phantom-only, unvalidated) only to a destination with ``send_not_validated``, whatever
    the review said. A superseded result (its job ran on part of a series that then grew,
    ``db.supersede``) is never sent: the job on the whole series is.
    """
    if superseded:
        return WITHHELD_SUPERSEDED
    if decision == REJECTED:
        return "withheld: rejected by a reviewer"
    if flagged and decision != ACCEPTED and not policy.send_needs_review:
        return "withheld: needs review (the destination has send_needs_review off)"
    if not_for_clinical_use(validation) and not policy.send_not_validated:
        return (
            f"withheld: {validation or 'unknown'} result, not for clinical use "
            "(the destination has send_not_validated off)"
        )
    return None
