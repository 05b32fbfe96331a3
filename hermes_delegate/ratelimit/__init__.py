"""The per-deployment capacity gate and its window stores (local, Redis)."""
