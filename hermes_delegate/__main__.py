"""`python -m hermes_delegate` is the `hermes-delegate` command."""

from .hosts.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
