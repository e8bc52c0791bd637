"""R/L (A/P, H/F) markers come from the image's own orientation, never from a guess."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from worker.dashboard.orientation import (
    Edges,
    direction_letters,
    edges_from_cosines,
    edges_from_patient_orientation,
    image_edges,
)


@pytest.mark.parametrize(
    ("cosines", "edges"),
    [
        # Axial, the usual way: patient's right on the image left, anterior at the top.
        ([1, 0, 0, 0, 1, 0], Edges("R", "L", "A", "P")),
        # Axial flipped left-right (rows run to the patient's right).
        ([-1, 0, 0, 0, 1, 0], Edges("L", "R", "A", "P")),
        # Coronal: rows to the left, columns to the feet.
        ([1, 0, 0, 0, 0, -1], Edges("R", "L", "H", "F")),
        # Sagittal: rows posterior, columns to the feet: no R/L edge, A/P instead.
        ([0, 1, 0, 0, 0, -1], Edges("A", "P", "H", "F")),
    ],
)
def test_edges_from_image_orientation(cosines: list[float], edges: Edges) -> None:
    assert edges_from_cosines(cosines) == edges


def test_an_oblique_direction_names_the_dominant_axis_first() -> None:
    assert direction_letters([0.8, -0.6, 0.0]) == "LA"
    assert direction_letters([0.99, 0.1, 0.0]) == "L"
    assert edges_from_cosines([0.8, -0.6, 0, 0.6, 0.8, 0]) == Edges("RP", "LA", "AR", "PL")


def test_edges_from_patient_orientation_of_a_radiograph() -> None:
    # A PA chest film as hung: increasing column toward the patient's left.
    assert edges_from_patient_orientation(["L", "F"]) == Edges("R", "L", "H", "F")
    # Flipped: the patient's right is on the image right.
    assert edges_from_patient_orientation(["R", "F"]) == Edges("L", "R", "H", "F")
    assert edges_from_patient_orientation(["", ""]) is None
    assert edges_from_patient_orientation(["X", "F"]) is None
    assert edges_from_patient_orientation(["L"]) is None


def test_without_orientation_the_edges_are_unknown() -> None:
    ds = Dataset()
    assert image_edges(ds) is None  # an ultrasound frame: no guess
    ds.PatientOrientation = ""
    assert image_edges(ds) is None
    ds.PatientOrientation = ["L", "F"]
    assert image_edges(ds) == Edges("R", "L", "H", "F")
    ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]  # CT/MR: the cosines win
    assert image_edges(ds) == Edges("L", "R", "A", "P")


def test_enhanced_multiframe_orientation_in_the_functional_groups() -> None:
    plane = Dataset()
    plane.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PlaneOrientationSequence = [plane]
    ds = Dataset()
    ds.SharedFunctionalGroupsSequence = [shared]
    assert image_edges(ds) == Edges("R", "L", "A", "P")
