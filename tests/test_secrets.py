"""Issue #5, secrets: run the whole CLI and tool surface with canary keys and assert that no canary
appears anywhere: stdout, stderr, every log record (DEBUG, litellm's included), results, tool JSON and
exception messages, on the success and the error paths. Keys only ever appear as set/missing or by
env var name.

Canaries live in env vars (with secret-looking names and without), behind `os.environ/` references,
and as literal `api_key`s of a config. A test-side provider echoes the Authorization header it got in
its 401/500 error body, as real providers do ("Incorrect API key provided: …"), so the redaction of
provider errors is exercised, not assumed.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from conftest import LoopbackPair
from hermes_delegate import DelegateError, Delegator, Task, load_config
from hermes_delegate.hosts import cli
from hermes_delegate.loopback import closed_port_url
from hermes_delegate.tools.delegate_tools import DelegateTools

# sk-shaped, and shapeless ones (no pattern can catch those: only knowing the value can)
CANARY_SK = "sk-canary-7f3a9e1b2c4d"
CANARY_PLAIN = "CANARYxq81zz0pl"
CANARY_LITERAL = "CANARYlit4m7q2w9"
CANARY_ODD = "CANARYodd5v8n1k3"  # in an env var whose name does not look secret
CANARY_UNUSED = "CANARYoai3h6j9d2"  # a provider key in the env that no deployment uses
CANARIES = (CANARY_SK, CANARY_PLAIN, CANARY_LITERAL, CANARY_ODD, CANARY_UNUSED)
ENV = {"ALPHA_API_KEY": CANARY_SK, "BETA_API_KEY": CANARY_PLAIN, "UPSTREAM_PASS_WORD_VALUE": CANARY_ODD,
       "OPENAI_API_KEY": CANARY_UNUSED}


def leaks(text: str) -> list[str]:
    """Every canary (or a 8+ character piece of one) found in `text`."""
    found = []
    for c in CANARIES:
        if any(c[i:i + 8] in text for i in range(len(c) - 7)):
            found.append(c)
    return found


# -- a provider that echoes the key it was sent ----------------------------------------------------
class _Echo(BaseHTTPRequestHandler):
    status = 401

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        auth = self.headers.get("authorization", "")
        key = auth.split(" ", 1)[-1]
        body = json.dumps({"error": {
            "message": f"Incorrect API key provided: {key}. You passed Authorization: {auth} "
                       f"(api_key={key})", "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[dict[int, str]]:
    """Two echo providers: {401: base_url, 500: base_url}."""
    servers, urls = [], {}
    for status in (401, 500):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        srv.status = status  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        urls[status] = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield urls
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _dep(group: str, model: str, base: str, key: str) -> dict[str, Any]:
    return {"model_name": group, "litellm_params": {"model": model, "api_base": base, "api_key": key}}


def canary_dict(providers: LoopbackPair, echo: dict[int, str]) -> dict[str, Any]:
    a, b = providers.alpha.base_url, providers.beta.base_url
    return {
        "delegation": {"model": "alpha", "aliases": {"small": "alpha", "large": "beta"}, "task_timeout_s": 10},
        "router": {"model_list": [
            _dep("alpha", "openai/alpha-model", a, "os.environ/ALPHA_API_KEY"),
            _dep("beta", "openai/beta-model", b, "os.environ/BETA_API_KEY"),
            _dep("lit", "openai/lit-model", a, CANARY_LITERAL),
            _dep("odd401", "openai/odd-model", echo[401], "os.environ/UPSTREAM_PASS_WORD_VALUE"),
            _dep("lit401", "openai/lit-model", echo[401], CANARY_LITERAL),
            _dep("plain500", "openai/plain-model", echo[500], "os.environ/BETA_API_KEY"),
            _dep("sk500", "openai/sk-model", echo[500], "os.environ/ALPHA_API_KEY"),
            _dep("dead", "openai/dead-model", closed_port_url(), "os.environ/BETA_API_KEY"),
            _dep("missing", "openai/missing-model", a, "os.environ/NOT_SET_ANYWHERE_KEY"),
        ], "router_settings": {"num_retries": 0}},
    }


GROUPS_OK = ("alpha", "beta", "lit")
GROUPS_BAD = ("odd401", "lit401", "plain500", "sk500", "dead")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def config_path(tmp_path: Path, providers: LoopbackPair, echo, env) -> Path:
    path = tmp_path / "cfg" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(canary_dict(providers, echo), sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def records() -> Iterator[list[str]]:
    """Every log record any logger handles, at DEBUG, as its handlers would see it: message, args
    and exception text. A host may attach any handler, so the records themselves must be clean."""
    seen: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                msg = record.getMessage()
            except Exception:  # noqa: BLE001
                msg = f"{record.msg} {record.args}"
            exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
            seen.append(f"{record.name}: {msg} {exc} {record.exc_text or ''}")

    grab = Grab(logging.DEBUG)
    original = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        grab.handle(record)
        original(self, record)

    levels = {n: logging.getLogger(n).level for n in ("", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy",
                                                      "litellm", "httpx", "openai", "hermes_delegate")}
    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
    for n in levels:
        logging.getLogger(n).setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logging.Logger.callHandlers = original  # type: ignore[method-assign]
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)


def run_cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, what went to `out`, everything else written to stdout/stderr)."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = cli.main(argv, out)
    finally:
        root.handlers[:], root.level = handlers, level  # cli.main replaces the root handlers
    captured = capfd.readouterr()
    return code, out.getvalue(), captured.out + captured.err


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert not leaks(text), f"canary {leaks(text)} in: {text[:2000]}"


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_resolve_models_doctor_show_keys_only_as_set_or_by_name(config_path, capfd, records):
    outputs = []
    for argv in (["resolve", "lit"], ["resolve", "alpha", "--json"], ["resolve", "odd401", "--json"],
                 ["models"], ["models", "--json"], ["doctor"], ["doctor", "--json"], ["-vv", "doctor"]):
        code, text, err = run_cli([*argv, "--config", str(config_path)], capfd)
        outputs += [text, err]
        assert code in (0, 1), (argv, code, text, err)
    assert_clean(*outputs, *records)
    doctor = json.loads(run_cli(["doctor", "--json", "--config", str(config_path)], capfd)[1])
    creds = {(d["group"], d["credentials"], d["key_env"]) for d in doctor["deployments"]}
    assert ("alpha", "set", "ALPHA_API_KEY") in creds and ("lit", "set", None) in creds
    assert ("odd401", "set", "UPSTREAM_PASS_WORD_VALUE") in creds
    assert ("missing", "missing", "NOT_SET_ANYWHERE_KEY") in creds
    assert any("NOT_SET_ANYWHERE_KEY" in p for p in doctor["problems"])


def test_cli_run_success_and_every_error_path_at_debug(config_path, tmp_path, capfd, records):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump([{"goal": f"g-{g}", "model": g} for g in GROUPS_OK + GROUPS_BAD]))
    code, text, err = run_cli(["-vv", "run", str(tasks), "--config", str(config_path)], capfd)
    assert code == 1, text + err  # some tasks fail
    code_json, text_json, err_json = run_cli(["-vv", "run", str(tasks), "--json", "--config", str(config_path)],
                                             capfd)
    assert code_json == 1
    batch = json.loads(text_json)
    status = {r["model_requested"]: (r["status"], (r["error"] or {}).get("type")) for r in batch["results"]}
    assert status == {"alpha": ("completed", None), "beta": ("completed", None), "lit": ("completed", None),
                      "odd401": ("failed", "auth"), "lit401": ("failed", "auth"),
                      "plain500": ("failed", "server"), "sk500": ("failed", "server"),
                      "dead": ("failed", "connection")}, status
    # a bad model: refused before anything runs (exit 2, message on stderr)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"goal": "x", "model": f"nosuch-{CANARY_PLAIN}"}, {"goal": "y", "model": "lit"}]))
    code_bad, text_bad, err_bad = run_cli(["-vv", "run", str(bad), "--config", str(config_path)], capfd)
    assert code_bad == 2 and "cannot run" in err_bad
    assert_clean(text, err, text_json, err_json, text_bad, err_bad, *records)
    assert any("litellm" in r.lower() for r in records), "litellm's DEBUG records were not captured"


def test_cli_human_readable_output_with_keys_in_the_goals(config_path, tmp_path, capfd):
    """The progress lines and the summary a person reads (not only --json): a goal that carries a key
    (pasted by a user) is shown redacted, even where the line cuts the goal short. (The goal itself is
    sent to the provider, so the openai client's own DEBUG records of the request are not checked here.)"""
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump([{"goal": f"{CANARY_LITERAL} rotate it", "model": "lit"},
                                     {"goal": f"{CANARY_PLAIN} and {CANARY_SK}", "model": "alpha"},
                                     {"goal": f"{CANARY_ODD} then fail", "model": "odd401"}]))
    code, text, err = run_cli(["run", str(tasks), "--config", str(config_path)], capfd)
    assert code == 1, text + err
    assert "✓ [1/3]" in text and "✗ [3/3]" in text and "3 tasks: 2 completed, 1 failed" in text, text
    assert "wall time" in text and "cost " in text
    assert_clean(text, err)


def test_cli_demo_with_a_canary_key_in_its_config(tmp_path, capfd, records, env):
    root = Path(__file__).resolve().parents[1] / "configs"
    data = yaml.safe_load((root / "demo.yaml").read_text())
    for dep in data["router"]["model_list"]:
        dep["litellm_params"]["api_key"] = CANARY_LITERAL
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(data))
    code, text, err = run_cli(["-vv", "demo", "--demo-config", str(cfg), "--tasks",
                               str(root / "demo-tasks.yaml")], capfd)
    assert code == 0, text + err
    assert_clean(text, err, *records)


def test_config_errors_never_echo_a_key(tmp_path, capfd, records, env):
    bad = {"router": {"model_list": [{"model_name": "x", "litellm_params": {"api_key": CANARY_LITERAL}}],
                      "router_settings": {"num_retries": 0}}, "delegation": {"model": 3, "allow": CANARY_PLAIN}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, _, text = run_cli(["doctor", "--config", str(path)], capfd)
    assert code == 2 and "Invalid config" in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"router:\n  model_list:\n    - api_key: {CANARY_LITERAL}\n   bad: [\n")
    code2, _, text2 = run_cli(["models", "--config", str(broken)], capfd)
    assert code2 == 2 and "not valid YAML" in text2
    with pytest.raises(DelegateError) as info:
        load_config(path)
    assert_clean(text, text2, str(info.value), json.dumps(info.value.to_dict()), *records)


# -- the tools -----------------------------------------------------------------------------------
def test_tools_list_models_and_delegate_task(config_path, records):
    tools = DelegateTools(Delegator(load_config(config_path)))
    outs = [json.dumps(tools.openai_tools()), tools.list_models_sync(), tools.list_models_sync({"model": "lit"}),
            tools.list_models_sync({"model": "odd401"}), tools.list_models_sync({"model": CANARY_PLAIN})]
    run = tools.delegate_task_sync({"tasks": [{"goal": f"t-{g}", "model": g} for g in GROUPS_OK + GROUPS_BAD]})
    data = json.loads(run)
    assert [r["status"] for r in data["results"]] == ["completed"] * 3 + ["failed"] * 5, run
    bad_model = tools.delegate_task_sync({"goal": "x", "model": f"openai/{CANARY_PLAIN}-nope --provider nosuch"})
    bad_payload = tools.delegate_task_sync(f'{{"goal": "{CANARY_PLAIN}", "tasks": 1}}')
    assert "error" in json.loads(bad_model) and "error" in json.loads(bad_payload)
    assert_clean(*outs, run, bad_model, bad_payload, *records)


def test_engine_results_and_provider_exception_messages(config_path, records):
    """The Delegator's own results (what every host gets), with keys echoed by the provider."""
    d = Delegator(load_config(config_path))
    batch = d.run_sync([Task(f"t-{g}", model=g) for g in GROUPS_BAD])
    text = json.dumps(batch.to_dict(), default=str)
    for r in batch.results:
        assert r.status == "failed" and r.attempts, r
        assert r.error["message"] and all(a.error for a in r.attempts)
    auth = [r for r in batch.results if r.error["type"] == "auth"]
    assert auth and all("Incorrect API key provided" in r.error["message"] for r in auth)
    assert_clean(text, repr(batch), *records)


def test_litellm_exceptions_raised_directly_are_mapped_clean(echo, env, records):
    """The raw litellm exception text (what map_litellm_errors turns into a ProviderError) echoes the key:
    the ProviderError must not, wherever it is raised."""
    import asyncio

    from hermes_delegate.routing._litellm import import_litellm, map_litellm_errors, to_provider_error
    from hermes_delegate.core.errors import ProviderError

    litellm = import_litellm()

    async def call(key: str, base: str) -> BaseException:
        try:
            with map_litellm_errors():
                await litellm.acompletion(model="openai/x", api_base=base, api_key=key, num_retries=0,
                                          messages=[{"role": "user", "content": "hi"}])
        except ProviderError as exc:
            return exc
        raise AssertionError("no error")

    # keys known to the process by their env var (set after import: the redactor must follow the env).
    # An arbitrary value outside any config or secret-named env var cannot be known: not tested here.
    for key, base in ((CANARY_PLAIN, echo[401]), (CANARY_PLAIN, echo[500]), (CANARY_SK, echo[401])):
        err = asyncio.run(call(key, base))
        raw = err.__cause__
        assert raw is not None and leaks(str(raw)), "the provider did not echo the key: the test proves nothing"
        assert_clean(str(err), json.dumps(err.to_dict()), json.dumps(to_provider_error(raw).to_dict()))
    assert_clean(*records)


def test_tools_redact_secrets_of_any_secret_named_param(monkeypatch, records):
    """Not only api_key: aws_secret_access_key, vertex_credentials (behind an env var whose name does not
    look secret) are credentials too, wherever they come back (an error, a summary, structured output)."""
    from hermes_delegate import WorkerOutput, config_from_dict

    aws, vertex = "CANARYaws2k8s4f6", "CANARYvtx9q3w5e1"
    monkeypatch.setenv("GCP_SA_JSON", vertex)
    cfg = config_from_dict({"router": {"model_list": [
        {"model_name": "aws", "litellm_params": {"model": "bedrock/anthropic.claude-3-haiku",
                                                 "aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": aws}},
        {"model_name": "vertex", "litellm_params": {"model": "vertex_ai/gemini-pro",
                                                    "vertex_credentials": "os.environ/GCP_SA_JSON"}}]}})

    class Echo:  # a host's worker that lets the credential through, as an SDK's error would
        async def run(self, job):
            if job.resolution.model == "aws":
                raise RuntimeError(f"botocore: signature mismatch for secret {aws}")
            return WorkerOutput(summary=f"the service account is {vertex}", output={"creds": [vertex]})

    tools = DelegateTools(Delegator(cfg, worker=Echo()))
    run = tools.delegate_task_sync({"tasks": [{"goal": "a", "model": "aws"}, {"goal": "v", "model": "vertex"}]})
    data = json.loads(run)
    assert [r["status"] for r in data["results"]] == ["failed", "completed"], run
    assert "signature mismatch" in data["results"][0]["error"]["message"]
    listing = tools.list_models_sync() + tools.list_models_sync({"model": "vertex"})
    direct = Delegator(cfg, worker=Echo()).run_sync([Task("a", model="aws"), Task("v", model="vertex")])
    for text in (run, listing, json.dumps(direct.to_dict(), default=str), *records):
        assert aws not in text and vertex not in text, text[:2000]


def test_a_host_logger_is_redacted_once_a_delegator_exists(records):
    """The hermes plugin logs under `hermes_delegate.hermes` (log.exception of a failed tool call): a
    logger filter sees only its own records, so creating a Delegator puts one on every such logger."""
    from hermes_delegate import config_from_dict

    log = logging.getLogger("hermes_delegate.hermes")
    Delegator(config_from_dict({"router": {"model_list": [
        _dep("x", "openai/x-model", "http://127.0.0.1:9/v1", CANARY_LITERAL)]}}))
    try:
        raise RuntimeError(f"Incorrect API key provided: {CANARY_LITERAL}")
    except RuntimeError:
        log.exception("delegate_task failed for %s", CANARY_LITERAL)
    assert any("delegate_task failed" in r for r in records)
    assert_clean(*records)


# -- regressions for the leaks found -------------------------------------------------------------
def test_key_behind_an_env_var_with_an_unremarkable_name_is_redacted(providers, echo, env):
    """`api_key: os.environ/UPSTREAM_PASS_WORD_VALUE` is valid LiteLLM; the name does not look secret,
    so only knowing the config's references catches the key a provider echoes back."""
    cfg = {"router": {"model_list": [_dep("odd", "openai/odd-model", echo[401], "os.environ/UPSTREAM_PASS_WORD_VALUE")],
                      "router_settings": {"num_retries": 0}}}
    from hermes_delegate import config_from_dict

    (r,) = Delegator(config_from_dict(cfg)).run_sync([Task("x", model="odd")]).results
    assert r.error["type"] == "auth" and "Incorrect API key provided" in r.error["message"]
    assert_clean(json.dumps(r.to_dict(), default=str))


def test_process_redactor_follows_env_vars_set_after_import(monkeypatch):
    from hermes_delegate.core.redact import redact

    value = "CANARYlate0env7z"
    assert redact(f"x {value} y") == f"x {value} y"  # not a secret yet
    monkeypatch.setenv("LATE_LOADED_API_TOKEN", value)
    assert value not in redact(f"key was {value}")


def test_log_filter_redacts_tracebacks(capfd):
    from hermes_delegate.core.redact import Redactor, install_log_filter

    logger = logging.getLogger("hermes_delegate_test.tb")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    install_log_filter(["hermes_delegate_test.tb"], Redactor([CANARY_PLAIN]))
    try:
        try:
            raise RuntimeError(f"Incorrect API key provided: {CANARY_PLAIN}")
        except RuntimeError:
            logger.exception("call failed for %s", CANARY_PLAIN)
        err = capfd.readouterr().err
        assert "RuntimeError: Incorrect API key provided: ***" in err and "Traceback" in err
        assert_clean(err)
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
