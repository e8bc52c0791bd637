from __future__ import annotations

from worker.core.registry import all_specs, get_spec
from worker.core.routing import route
from worker.core.tags import SeriesTags


def test_registry_discovers_model_modules() -> None:
    names = [spec.name for spec in all_specs()]
    assert "lung-ct-threshold" in names
    assert get_spec("lung-ct-threshold").queue == "cpu"


def test_chest_ct_routes_to_lung_model() -> None:
    spec = route(SeriesTags.of("CT", body_part_examined="chest"))
    assert spec is not None and spec.name == "lung-ct-unet"
    spec = route(SeriesTags.of("CT", series_description="Thorax 1.0 B31f"))
    assert spec is not None and spec.name == "lung-ct-unet"
    assert get_spec("lung-ct-threshold").accepts(SeriesTags.of("CT", body_part_examined="chest"))


def test_other_series_have_no_model() -> None:
    assert route(SeriesTags.of("CT", body_part_examined="ABDOMEN")) is None
    assert route(SeriesTags.of("MR", body_part_examined="CHEST")) is None
    assert route(SeriesTags.of("SR")) is None


def test_image_type_values_are_split() -> None:
    tags = SeriesTags.of("CT", image_type="original\\primary\\axial")
    assert tags.image_type_values == ("ORIGINAL", "PRIMARY", "AXIAL")
