"""Shared fixtures live in tests/support/*.py, one module per real component they start."""

import pkgutil
from pathlib import Path

import pytest

# The support modules import each other, so some are imported before pytest loads them as plugins: have their
# asserts rewritten all the same.
pytest.register_assert_rewrite("support")

pytest_plugins = [f"support.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "support")])]


def pytest_itemcollected(item: pytest.Item) -> None:
    """Groups for pytest-xdist's `--dist loadgroup` (the Makefile's), given as each test is collected, before
    xdist reads them: a module's tests stay on one worker, which sets its shared clusters up once; and the
    modules that change the machine's network (marked `root` or `host_network`) form one group, run one
    after another, since pod namespaces, the lab bridge and `podnet clean --all` are the machine's, not a
    cluster's."""
    shares_the_host = item.get_closest_marker("root") or item.get_closest_marker("host_network")
    item.add_marker(pytest.mark.xdist_group("host-network" if shares_the_host else item.nodeid.split("::", 1)[0]))
