"""Fixtures shared by integration modules (their helpers live in tests/support/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import PacsStack, running_pacs_stack


@pytest.fixture(scope="module")
def pacs_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str
) -> Iterator[PacsStack]:
    """Gateway and worker on the test Redis/PostgreSQL delivering to a DCMTK PACS; lung CT on
    the threshold model (fast, no weights). One per module."""
    root = tmp_path_factory.mktemp("pacs_stack")
    with running_pacs_stack(
        root, redis_url, postgres_url, {"MEDSEG_LUNG_CT_MODEL": "threshold"}
    ) as stack:
        yield stack
