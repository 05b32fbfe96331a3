"""The pure core: model-string grammar, catalog, provider tables, resolver, precedence, planning,
pricing, config models, errors and results. No network, no clock, no litellm import."""
