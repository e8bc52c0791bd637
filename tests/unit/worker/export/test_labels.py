"""Series descriptions of a result's SEG and SR: the flags always fit in the 64 characters."""

from __future__ import annotations

from worker.export.labels import series_description
from worker.export.outputs import ModelOutput


def test_flags_follow_the_status_and_the_review() -> None:
    plain = ModelOutput(segments=[], validation="validated-real")
    assert series_description("medseg m", plain) == "medseg m"
    flagged = ModelOutput(segments=[], validation="reference-only", review=["gate"])
    assert series_description("medseg m", flagged) == "medseg m NEEDS REVIEW"
    phantom = ModelOutput(segments=[], validation="phantom-only", review=["gate"])
    assert series_description("medseg m", phantom) == "medseg m NOT FOR CLINICAL USE NEEDS REVIEW"


def test_a_long_name_is_shortened_never_the_flags() -> None:
    output = ModelOutput(segments=[], validation="unvalidated", review=["gate"])
    text = series_description("medseg a-rather-long-model-name-for-lungs measurements", output)
    assert len(text) == 64 and text.endswith(" NOT FOR CLINICAL USE NEEDS REVIEW")
