"""Shared fixtures live in tests/support/*.py, one module per real component they start."""

import pkgutil
from pathlib import Path

import pytest

# The support modules import each other, so some are imported before pytest loads them as plugins: have their
# asserts rewritten all the same.
pytest.register_assert_rewrite("support")

pytest_plugins = [f"support.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "support")])]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup` (the Makefile's): a module's tests stay on one worker,
    which sets its shared clusters up once; and the modules that change the machine's network (any of their
    tests marked `root` or `host_network`) form one group, run one after another, since pod namespaces,
    the lab bridge and `podnet clean --all` are the machine's, not a cluster's."""
    def module_of(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    sharing = {module_of(item) for item in items
               if item.get_closest_marker("root") or item.get_closest_marker("host_network")}
    for item in items:
        module = module_of(item)
        item.add_marker(pytest.mark.xdist_group("host-network" if module in sharing else module))
