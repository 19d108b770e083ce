"""The shape DESIGN.md fixes: dependency direction, nothing at import, fail-fast config."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from sequences.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent


PACKAGES = ("app", "demo", "sequences", "channels", "connectors")
# app -> demo -> sequences -> channels -> connectors: a package imports only those after it.
# (channels may use connectors.base's payload errors; connectors know nothing of channels.)
LAYERS = {"app": 4, "demo": 3, "sequences": 2, "channels": 1, "connectors": 0}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _imports(module: str, path: Path, *, imported_names: bool = True) -> set[str]:
    """Every name ``path`` imports, at module level or inside functions (a function-level import
    is how a cycle hides), absolute and relative: with ``imported_names`` the names taken from a
    module (``x.y`` for ``from x import y``), else the modules named in the statements."""
    names: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if imported_names:
                # ``from x import y`` is an import of module x.y when there is one, else of x.
                names.update(f"{source}.{alias.name}" for alias in node.names)
            else:
                names.add(source)
    return names


def imported_modules(package: str) -> set[tuple[str, str]]:
    return {
        (str(path.relative_to(ROOT)), name)
        for module, path in _modules().items()
        if module.split(".")[0] == package
        for name in _imports(module, path, imported_names=False)
    }


def import_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports (a name resolves to its longest module)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {resolve(name) for name in _imports(module, path)}
        graph[module] = {target for target in targets if target and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    graph = {"a.one": {"a.two"}, "a.two": {"a.three"}, "a.three": {"a.one"}, "a.four": {"a.one"}}
    assert cycles(graph) == [["a.one", "a.three", "a.two"]]
    assert cycles({"a.one": {"a.two"}, "a.two": set()}) == []


def test_the_import_graph_counts_imports_inside_functions(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from sequences.engine import sending\n    import app.worker\n")
    assert {"sequences.engine.sending", "app.worker"} <= _imports("late", module)


def test_no_import_cycles_among_our_modules():
    assert cycles(import_graph()) == []


def test_packages_import_only_the_packages_below_them():
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if LAYERS[target.split(".")[0]] > LAYERS[module.split(".")[0]]
    )
    assert offenders == []


def test_nothing_outside_app_and_demo_imports_flask():
    offenders = sorted(
        f"{path} imports {name}"
        for package in ("sequences", "channels", "connectors")
        for path, name in imported_modules(package)
        if name.split(".")[0] in ("flask", "werkzeug")
    )
    assert offenders == []


def test_the_rq_entry_points_are_imported_only_by_the_worker():
    """sequences.jobs sits on top of the engine: whatever schedules enqueues by name."""
    importers = sorted(module for module, targets in import_graph().items() if "sequences.jobs" in targets)
    assert importers == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sequences", ("flask", "app", "demo")),
        ("channels", ("flask", "app", "demo", "sequences", "rq", "sqlmodel", "sqlalchemy")),
        (
            "connectors",
            ("flask", "app", "demo", "sequences", "channels", "rq", "sqlmodel", "sqlalchemy", "redis"),
        ),
    ],
)
def test_dependencies_point_one_way(package, forbidden):
    offenders = sorted(
        f"{path} imports {module}"
        for path, module in imported_modules(package)
        if module.split(".")[0] in forbidden
    )
    assert offenders == []


def test_sequences_use_only_the_connector_base():
    offenders = sorted(
        f"{path} imports {module}"
        for path, module in imported_modules("sequences")
        if module.startswith("connectors.") and module != "connectors.base"
    )
    assert offenders == []


def test_importing_the_packages_opens_no_connection_and_touches_no_file(tmp_path):
    code = (
        "import socket, builtins\n"
        "def refuse(*a, **k): raise SystemExit('network at import')\n"
        "socket.socket.connect = refuse\n"
        "import app, app.webhooks.platforms, app.links, app.outbox, app.ops, app.cli.main, app.worker, app.wiring\n"
        "import sequences.jobs, sequences.engine.sending, demo.connector\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_production_refuses_to_start_without_its_secrets():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"CARTBACK_ENV": "production", "DATABASE_URL": "postgresql://x/y"})
    for name in ("SECRET_KEY", "ENCRYPTION_KEY", "REDIS_URL", "APP_URL"):
        assert name in str(refused.value)


def test_a_bad_encryption_key_is_explained():
    with pytest.raises(ConfigError, match="Fernet"):
        Settings.from_env({"SECRET_KEY": "x", "ENCRYPTION_KEY": "too-short"})


def test_development_generates_keys_once_and_reuses_them(tmp_path):
    first = Settings.from_env({"CARTBACK_INSTANCE_PATH": str(tmp_path)})
    second = Settings.from_env({"CARTBACK_INSTANCE_PATH": str(tmp_path)})
    assert first.secret_key == second.secret_key and first.encryption_keys == second.encryption_keys
    assert (tmp_path / "dev-secrets.env").stat().st_mode & 0o077 == 0


def test_the_demo_time_scale_is_refused_in_production():
    from cryptography.fernet import Fernet

    env = {
        "CARTBACK_ENV": "production",
        "SECRET_KEY": "s",
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DATABASE_URL": "postgresql://db/cartback",
        "REDIS_URL": "redis://redis:6379/0",
        "APP_URL": "https://cartback.example",
    }
    assert Settings.from_env(env).is_production
    with pytest.raises(ConfigError, match="CARTBACK_TIME_SCALE"):
        Settings.from_env({**env, "CARTBACK_TIME_SCALE": "60"})


def test_half_a_shopify_configuration_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="SHOPIFY_API_SECRET is missing"):
        Settings.from_env({"CARTBACK_INSTANCE_PATH": str(tmp_path), "SHOPIFY_API_KEY": "client-id"})


PRODUCTION_ENV = {
    "PATH": "/usr/bin:/bin",
    "PYTHONPATH": str(ROOT),
    "CARTBACK_ENV": "production",
    "SECRET_KEY": "production-secret",
    "ENCRYPTION_KEY": "Jbk5U3kQ8y1Vq1hL0m3o0xk6rYdQy9nY1wX8kS2d4uE=",
    "DATABASE_URL": "postgresql://db.invalid/cartback",
    "REDIS_URL": "redis://redis.invalid:6379/0",
    "APP_URL": "https://cartback.example",
    "WHATSAPP_TRANSPORT": "cloud",
}


def _modules_imported_by(args: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    """The modules a Python process imports (``-X importtime`` lists every one on stderr)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_production_web_and_worker_import_nothing_of_the_demo(tmp_path):
    code = (
        "from app import create_app\n"
        "import app.cli.main, app.worker\n"
        "from app.wiring import build_runtime\n"
        "from sequences.config import Settings\n"
        "flask_app = create_app()\n"
        "assert 'demo' not in build_runtime(Settings.from_env()).connectors.platforms()\n"
        "assert not [rule for rule in flask_app.url_map.iter_rules() if 'demo' in rule.rule]\n"
    )
    modules = _modules_imported_by(["-c", code], PRODUCTION_ENV, tmp_path)
    assert "app.admin.pages" in modules  # the probe sees our modules
    assert sorted(name for name in modules if name.split(".")[0] == "demo") == []


def test_outside_production_the_demo_platform_is_there(tmp_path):
    code = "from app import create_app\nflask_app = create_app()\n"
    modules = _modules_imported_by(["-c", code], {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, tmp_path)
    assert "demo.connector" in modules and "demo.store.views" in modules


@pytest.mark.postgres(only=True)
def test_a_production_migration_imports_nothing_of_the_demo(database_url, tmp_path):
    env = {**PRODUCTION_ENV, "DATABASE_URL": database_url}
    modules = _modules_imported_by(["-m", "app.cli", "db", "upgrade"], env, ROOT)
    assert "app.migrations.env" in modules or "alembic" in modules
    assert sorted(name for name in modules if name.split(".")[0] == "demo") == []


def test_importing_the_dashboard_figures_installs_no_session_hook():
    code = (
        "from sqlalchemy import event\n"
        "from sqlalchemy.orm import Session\n"
        "from sequences.db import Database\n"
        "from sequences.merchant import rollups\n"
        "database = Database('sqlite://')\n"
        "assert not event.contains(Session, 'before_flush', rollups._collect_changes)\n"
        "assert not rollups.keeps_figures(database)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_building_the_runtime_installs_the_dashboard_figures(settings):
    from app.wiring import build_runtime
    from sequences.db import Database
    from sequences.merchant import rollups

    database = Database(f"sqlite:///{settings.instance_path}/hooks.db")
    assert not rollups.keeps_figures(database)
    build_runtime(settings, database=database)
    assert rollups.keeps_figures(database)
