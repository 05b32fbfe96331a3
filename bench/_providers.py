"""Loopback providers in a process of their own, for the benches.

A real provider does not share the client's CPU or its GIL. In the client's process, a provider
thread stamps a request's arrival only when it gets the GIL, so the client's own work (litellm's
call path) shifts the provider's clock and its rate windows by tens of milliseconds under load: the
bench would measure its own provider. Here the providers run in a child process and answer a few
line commands over its stdin/stdout (JSON, one line each):

    providers = RemoteProviders([{"name": "p1", "latency_s": 0.2, "rps": 5}])
    providers.base_urls          # ["http://127.0.0.1:PORT/v1"]
    providers.reset_stats()
    providers.stats()            # [{"requests": …, "429": …, …}] per provider
    providers.requests()         # [[(arrival, status), …]] per provider; arrival is time.monotonic(),
                                 # which on Linux is one clock for every process
    providers.stop()
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


class RemoteProviders:
    def __init__(self, specs: list[dict[str, Any]]):
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.base_urls: list[str] = self._ask(json.dumps(specs))

    def _ask(self, line: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the provider process ended (rc {self.proc.wait()})")
        return json.loads(answer)

    def reset_stats(self) -> None:
        self._ask("reset")

    def stats(self) -> list[dict[str, Any]]:
        return self._ask("stats")

    def requests(self) -> list[list[tuple[float, Any]]]:
        return [[(t, s) for t, s in rows] for rows in self._ask("requests")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._ask("stop")
            self.proc.wait(timeout=30)

    def __enter__(self) -> "RemoteProviders":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _serve() -> None:
    from hermes_delegate.loopback import LoopbackProvider

    specs = json.loads(sys.stdin.readline())
    providers = [LoopbackProvider(**spec).start() for spec in specs]

    def say(value: Any) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    say([p.base_url for p in providers])
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "reset":
            for p in providers:
                p.reset_stats()
            say(True)
        elif cmd == "stats":
            say([p.stats() for p in providers])
        elif cmd == "requests":
            say([[(r.time, r.status) for r in p.requests] for p in providers])
        elif cmd == "stop":
            for p in providers:
                p.stop()
            say(True)
            return
        else:
            say({"error": f"unknown command {cmd!r}"})


if __name__ == "__main__":
    _serve()
