"""A warm Python for the tests' own helper subprocesses: a server that has imported litellm (and openai)
once and forks a child per run, so a hermes scenario or a Redis worker process does not pay ~2 s of CPU
importing them again. Used through ``helpers.warm_command`` (which starts one server per pytest process).

    python warm_python.py serve SOCKET MODULE...   the server (started by helpers; exits when its stdin closes)
    python -I -S warm_python.py run SOCKET SCRIPT ARG...   the shim a test starts instead of `python SCRIPT ARG...`

The shim is an ordinary subprocess (Popen, pipes, communicate, timeout, kill all work as before). It hands
its stdin/stdout/stderr, environment, working directory and argv to the server, which forks; the child
puts them in place and runs SCRIPT as ``__main__`` (sys.argv and sys.path[0] as ``python SCRIPT`` sets
them; the interpreter's normal exit: atexit handlers, non-daemon threads joined). The shim forwards the
catchable stop signals to the child and exits with the child's status (a signal death is re-raised on
itself); if the shim dies (SIGKILL, a test's timeout), the server kills the child. The child ends as
the interpreter would (non-daemon threads joined, atexit handlers run, stdio flushed) but skips the final
teardown of modules and objects (``__del__`` of objects still alive at exit does not run).

What differs from a fresh interpreter: the preloaded modules are already in ``sys.modules`` (a test that
checks what an import pulls in must use a fresh ``python``), and the hash seed is the server's.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

_LEN = struct.Struct("!I")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


# -- the shim (stdlib only, started with -I -S) -------------------------------------------------------
def _shim(sock_path: str, argv: list[str]) -> None:
    import json

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sock_path)
    payload = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    socket.send_fds(sock, [_LEN.pack(len(payload)) + payload], [0, 1, 2])
    reader = sock.makefile("rb")
    first = reader.readline().split()
    if first[:1] != [b"pid"]:
        sys.stderr.write(f"warm_python: the server did not start the child: {first!r}\n")
        sys.exit(70)
    child = int(first[1])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in _STOP_SIGNALS:
        signal.signal(sig, forward)
    last = reader.readline().split()
    if last[:1] != [b"exit"]:
        sys.stderr.write(f"warm_python: lost the server before the child's exit: {last!r}\n")
        sys.exit(70)
    code = int(last[1])
    if code < 0:  # killed by a signal: die the same way, so the caller's returncode is the same
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# -- the server ------------------------------------------------------------------------------------
def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    import json

    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while len(data) < _LEN.size or len(data) < _LEN.size + _LEN.unpack_from(data)[0]:
        more = conn.recv(1 << 20)
        if not more:
            raise EOFError("the shim closed its connection mid-request")
        data += more
    (size,) = _LEN.unpack_from(data)
    return json.loads(data[_LEN.size:_LEN.size + size]), list(fds)


def _serve(sock_path: str) -> tuple[dict, list[int]]:
    """Serve until stdin closes (then exit); in a forked child, return its request and fds."""
    import selectors

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, ("accept",))
    sel.register(0, selectors.EVENT_READ, ("parent",))
    children: dict[int, tuple[socket.socket, int]] = {}  # pid -> (the shim's connection, pidfd)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while True:
        for key, _events in sel.select():
            kind = key.data[0]
            if kind == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _recv_request(conn)
                except (OSError, EOFError, ValueError) as exc:
                    sys.stderr.write(f"warm_python: bad request: {exc!r}\n")
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # the child: drop the server's state, return to the top level
                    sel.close()
                    listener.close()
                    for other, pidfd in children.values():
                        other.close()
                        os.close(pidfd)
                    conn.close()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pid] = (conn, pidfd)
                conn.sendall(f"pid {pid}\n".encode())
                sel.register(pidfd, selectors.EVENT_READ, ("child", pid))
                sel.register(conn, selectors.EVENT_READ, ("shim", pid))
            elif kind == "child":  # a child exited: tell its shim
                pid = key.data[1]
                _, status = os.waitpid(pid, 0)
                conn, pidfd = children.pop(pid)
                sel.unregister(pidfd)
                sel.unregister(conn)
                os.close(pidfd)
                try:
                    conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:
                    pass
                conn.close()
            elif kind == "shim":  # the shim went away (killed): its child goes too
                pid = key.data[1]
                if not children[pid][0].recv(64):
                    sel.unregister(children[pid][0])
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            elif kind == "parent" and not os.read(0, 4096):  # pytest is gone
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                os._exit(0)


def _become(request: dict, fds: list[int]) -> str:
    """In the forked child: the shim's stdio, environment, cwd and argv; returns the script's path."""
    import io

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(request["cwd"])
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    encoding = "utf-8"
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding=encoding)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.open(1, "wb", buffering=0 if unbuffered else -1,
                                                           closefd=False),
                                                   encoding=encoding, write_through=unbuffered,
                                                   line_buffering=os.isatty(1))
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.open(2, "wb", buffering=0 if unbuffered else -1,
                                                           closefd=False),
                                                   encoding=encoding, errors="backslashreplace",
                                                   write_through=unbuffered, line_buffering=True)
    for sig in _STOP_SIGNALS:  # as a fresh interpreter has them
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    script = os.path.abspath(request["argv"][0])
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(script)
    return script


def _run(script: str) -> int:
    """Run `script` as __main__; the exit code `python SCRIPT` would have (a traceback printed as it would)."""
    import runpy

    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - the top level of an interpreter: every uncaught exception
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _exit_like_the_interpreter(code: int) -> None:
    """What interpreter shutdown does that a program can see (join the non-daemon threads, run the atexit
    handlers, flush stdio), then exit without tearing the preloaded modules down (which would touch, and
    so copy, every page shared with the server)."""
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF if code >= 0 else 1)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        _shim(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "serve":
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        sys.path.pop(0)  # this directory holds test modules; nothing is imported from it
        import importlib

        for name in sys.argv[3:]:
            try:
                importlib.import_module(name)
            except ImportError:  # not installed in this environment: its users import it themselves
                pass
        import gc

        gc.freeze()  # the preloaded objects: never scanned by a child's collections (no copy-on-write)
        _script = _become(*_serve(sys.argv[2]))
        del importlib, gc
        _exit_like_the_interpreter(_run(_script))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve SOCKET MODULE... | run SOCKET SCRIPT ARG...")
