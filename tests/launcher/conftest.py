"""Fixtures shared by the launcher tests: the app over the fake pool and its standard models."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from modelyard.launcher.app import create_app

from .fakes import FakePool, make_plan


@pytest.fixture
def pool():
    return FakePool(make_plan())


@pytest.fixture
def client(pool):
    with TestClient(create_app(make_plan(), pool=pool)) as test_client:
        yield test_client
