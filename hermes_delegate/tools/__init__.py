"""The host-neutral agent tools: argument parsing, schemas, list_models."""
