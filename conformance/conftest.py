"""Fixtures: per module a running switchboard, a test bot for the Demo Bot and the Legacy Bot, SDK
clients for both apps and the sim API; per test, the bot's and the response hook's findings turn into a
failure of that test. The report (docs/CONFORMANCE.md) is written at session end."""

import pytest

# The helpers assert sequences; rewrite them so a failure shows the diff, not a bare AssertionError.
pytest.register_assert_rewrite("notes", "flows")

import bot as botmod  # noqa: E402
import graph  # noqa: E402
import report  # noqa: E402
from directory import DEMO_BOT, LEGACY_BOT  # noqa: E402
from server import RING_TIMEOUT_MS, Server  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "example(seed, title): the documented example a test reproduces")


class Env:
    def __init__(self, tmp_dir, loop, ring_timeout_ms=RING_TIMEOUT_MS):
        self.bot = botmod.Bot()
        self.httpd = botmod.serve(self.bot)
        self.server = Server(tmp_dir, self.bot.url("demo"), self.bot.url("legacy"), ring_timeout_ms)
        self.bot.keys = botmod.Keys(self.server.notification_openid, self.server.cafile)
        # Before any traffic: the first notification must not wait for the schemas, keys and models.
        self.bot.warm_up()
        self.responses = graph.Responses()
        self.demo = graph.Graph(self.server, loop, self.responses, DEMO_BOT)
        self.legacy = graph.Graph(self.server, loop, self.responses, LEGACY_BOT)
        self.sim = graph.Sim(self.server)

    def close(self):
        # Close the clients' keep-alive connections first: the server drains open connections on SIGTERM.
        for app in (self.demo, self.legacy):
            app.close()
        self.sim.http.close()
        self.server.stop()
        self.httpd.shutdown()


@pytest.fixture(scope="session")
def loop():
    loop = graph.Loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def env(request, tmp_path_factory, loop):
    ring_timeout_ms = getattr(request.module, "RING_TIMEOUT_MS", RING_TIMEOUT_MS)
    env = Env(tmp_path_factory.mktemp("switchboard"), loop, ring_timeout_ms)
    yield env
    env.close()


_ENVS = []


@pytest.fixture(autouse=True)
def _track(request, env):
    marker = request.node.get_closest_marker("example")
    doc = " ".join((request.node.function.__doc__ or "").split("\n\n")[0].split())
    report.start(request.node.nodeid, request.node.name, doc, tuple(marker.args) if marker else None)
    _ENVS[:] = [env]
    env.sim.clear()
    env.bot.drain_problems()
    env.responses.violations.clear()
    start = (env.bot.validated, len(env.responses.seen))
    yield
    rec = report.current()
    rec.notifications = env.bot.validated - start[0]
    rec.requests = env.responses.seen[start[1] :]
    report.finish()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After the test body: anything the bot rejected or the schema checks found fails the test."""
    result = yield
    if _ENVS:
        env = _ENVS[0]
        problems = env.bot.drain_problems() + env.responses.violations
        env.responses.violations = []
        if problems:
            raise AssertionError("conformance violations:\n  " + "\n  ".join(problems))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    rec = report.RECORDS.get(item.nodeid)
    if rec is not None and rep.when == "call":
        rec.outcome = "pass" if rep.passed else "**FAIL**"
    elif rec is not None and rep.failed:
        rec.outcome = "**FAIL**"
    return rep


def pytest_sessionfinish(session):
    opts = session.config.option
    report.write(partial=bool(opts.keyword or opts.markexpr or opts.file_or_dir))
