"""The LiteLLM edge: the one `import litellm`, the Router handle, its callbacks, litellm_settings."""
