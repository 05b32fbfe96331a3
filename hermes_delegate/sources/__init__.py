"""Where config and model groups come from: the YAML files, a hermes home, a running LiteLLM proxy.
They return values and mutate nothing."""
