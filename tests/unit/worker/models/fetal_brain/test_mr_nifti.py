"""A NIfTI stack written as an MR series keeps its geometry: the service loads the same voxels
in the same places (RAS to LPS), with the thick axis as the slices."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.support.tools import dciodvfy_errors
from worker.models.fetal_brain.data import nifti_pairs
from worker.models.fetal_brain.mr_dicom import write_nifti_stack
from worker.pipeline.loading import load_series


def test_a_nifti_stack_becomes_an_mr_series_with_its_geometry(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, (24, 20, 5)).astype(np.float32)  # (i, j, k), k thick
    angle = np.radians(20)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.1, 1.1, 3.3])
    affine[:3, 3] = [-20.0, 15.0, 40.0]
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "s_image.nii.gz")
    nib.save(nib.Nifti1Image((volume > 500).astype(np.uint8), affine), tmp_path / "s_mask.nii.gz")

    paths = write_nifti_stack(tmp_path / "s_image.nii.gz", tmp_path / "series")
    series = load_series(paths)
    geometry = series.require_geometry()
    (_, image, _, spacing) = next(nifti_pairs(tmp_path))
    assert series.frames.shape == image.shape == (5, 20, 24)
    assert np.array_equal(series.frames, np.round(image))
    assert geometry.pixel_spacing == pytest.approx(spacing[:2], abs=1e-4)
    assert geometry.slice_thicknesses() == pytest.approx([3.3] * 5, abs=1e-3)
    # Voxel (i, j, k) of the NIfTI sits where its affine says, in LPS.
    i, j, k = 7, 3, 2
    ras = affine @ np.array([i, j, k, 1.0])
    lps = ras[:3] * [-1, -1, 1]
    position = (
        geometry.positions[k]
        + geometry.row_cosine * i * geometry.pixel_spacing[1]
        + geometry.column_cosine * j * geometry.pixel_spacing[0]
    )
    assert position == pytest.approx(lps, abs=1e-2)
    assert dciodvfy_errors(paths[0]) == []
