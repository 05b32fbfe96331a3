"""Thin adapters over the public API: the CLI, its renderer and demo, the MCP server."""
