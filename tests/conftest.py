"""Shared fixtures. Every store-backed test runs twice: on SQLite and on the PostgreSQL
server at 127.0.0.1:5432 (database ``test``), each in a schema of its own."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from db_support import database, migrate
from modelyard import Client, Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from modelyard.store.db import Database
from s3_support import s3, s3_endpoint  # noqa: F401  (fixtures: moto's S3 server)


@pytest.fixture(scope="session", autouse=True)
def _one_default_tls_context() -> Iterator[None]:
    """httpx builds an SSL context for every client (loading certifi's CA bundle: ~30 ms),
    even one that only speaks plain HTTP to 127.0.0.1, and the tests make thousands of
    clients. The default context (verify=True, no client certificate, no SSL_CERT_FILE or
    SSL_CERT_DIR) is built once and shared: the same settings, so the same verification.
    Any other combination is built as before."""
    from httpx._transports import default as transports

    original = transports.create_ssl_context
    shared: list[ssl.SSLContext] = []

    def create(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        overridden = trust_env and (os.environ.get("SSL_CERT_FILE")
                                    or os.environ.get("SSL_CERT_DIR"))
        if verify is not True or cert is not None or overridden:
            return original(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(original(verify=verify, cert=cert, trust_env=trust_env))
        return shared[0]

    transports.create_ssl_context = create
    try:
        yield
    finally:
        transports.create_ssl_context = original


@pytest.fixture(scope="session", autouse=True)
def _one_click_command_per_cli() -> Iterator[None]:
    """Typer's CliRunner turns the Typer app into its Click command tree on every invoke
    (every command's signature inspected: 25-50 ms for modelyard's CLI, and the tests invoke
    it about a thousand times). The tree is built once per app and reused, as one process
    running the CLI would; each invoke still parses its arguments in a fresh context."""
    import typer.testing

    original = typer.testing._get_command
    built: dict[int, tuple[Any, Any]] = {}

    def get_command(app: Any) -> Any:
        if id(app) not in built:  # the app itself is kept, so its id stays its own
            built[id(app)] = (app, original(app))
        return built[id(app)][1]

    typer.testing._get_command = get_command
    try:
        yield
    finally:
        typer.testing._get_command = original


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """An empty store at the current schema (each backend in turn, as ``database_url``)."""
    migrate(database_url)  # the session's migration, copied (Alembic finds it at head)
    database = Database(database_url)
    database.upgrade()
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_settings(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Like ``database_url`` + ``settings``, once per module (for read-only tests)."""
    home = tmp_path_factory.mktemp("yard")
    with database(request.param, home) as url:
        yield Settings.load(home, env={}, database_url=url)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings.load(tmp_path / "yard", env={}, database_url=database_url)


@pytest.fixture
def yard_and_key(settings: Settings) -> Iterator[tuple[Yard, str]]:
    migrate(settings.database_url)  # the session's migration, copied; Yard.init finds it at head
    yard, key = Yard.init(settings=settings)
    assert key is not None
    try:
        yield yard, key
    finally:
        yard.close()


@pytest.fixture
def yard(yard_and_key: tuple[Yard, str]) -> Yard:
    return yard_and_key[0]


@pytest.fixture
def admin_key(yard_and_key: tuple[Yard, str]) -> str:
    return yard_and_key[1]


@pytest.fixture
def server(yard: Yard) -> Iterator[BackgroundServer]:
    """The real server on a random 127.0.0.1 port."""
    with BackgroundServer(yard) as srv:
        yield srv


@pytest.fixture
def client(server: BackgroundServer, admin_key: str) -> Iterator[Client]:
    with Client(server.url, admin_key) as c:
        yield c


@pytest.fixture(scope="session")
def tabular() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generated churn-like data: X (float32, 4 features), a class label and a target."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    target = (2 * x[:, 0] - x[:, 2] + rng.normal(scale=0.1, size=200)).astype(np.float64)
    return x, label, target


@pytest.fixture(scope="session")
def classifier(tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> LogisticRegression:
    x, label, _ = tabular
    return LogisticRegression().fit(x, label)


@pytest.fixture(scope="session")
def regressor(tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Ridge:
    x, _, target = tabular
    return Ridge().fit(x, target)
