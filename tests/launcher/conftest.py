"""Fixtures shared by the launcher tests: the app over the fake pool and its standard models."""

from __future__ import annotations

import pytest
from modelyard.launcher.app import create_app
from starlette.testclient import TestClient

from .fakes import FakePool, make_plan


@pytest.fixture
def pool():
    return FakePool(make_plan())


@pytest.fixture
def client(pool):
    with TestClient(create_app(make_plan(), pool=pool)) as test_client:
        yield test_client
