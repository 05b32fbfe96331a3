"""The public surface is exactly `hermes_delegate.__all__`, sorted, and every name in it exists."""

import importlib.metadata

import hermes_delegate


def test_all_is_sorted_and_complete():
    assert hermes_delegate.__all__ == sorted(hermes_delegate.__all__)
    for name in hermes_delegate.__all__:
        assert hasattr(hermes_delegate, name), name


def test_public_members_are_exported():
    """Every public object defined by the package and re-exported at the top is in __all__ (httpx's rule)."""
    public = {name for name, value in vars(hermes_delegate).items()
              if not name.startswith("_") and getattr(value, "__module__", "").startswith("hermes_delegate.")}
    assert public <= set(hermes_delegate.__all__), sorted(public - set(hermes_delegate.__all__))


def test_hosts_get_the_tools_from_the_top():
    from hermes_delegate import DelegateTools, tool_error  # noqa: F401
    from hermes_delegate.core.errors import ConfigError

    body = tool_error(ConfigError("bad", hint="fix it"))
    assert body["type"] and "bad" in body["error"] and body["hint"] == "fix it"


def test_version_comes_from_the_package_metadata():
    assert hermes_delegate.__version__ == importlib.metadata.version("hermes-delegate")
