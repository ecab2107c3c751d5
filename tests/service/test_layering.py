"""The architecture's import rules, checked on the source (AST), not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

import fleet

ROOT = Path(fleet.__file__).parent
FRAMEWORKS = ("sqlalchemy", "fastapi", "starlette", "paho", "zeroconf", "pydantic", "uvicorn", "typer")


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def offenders(folder: str, banned: tuple[str, ...]) -> list[str]:
    bad = []
    for f in sorted((ROOT / folder).rglob("*.py")):
        for mod in imports(f):
            if mod.split(".")[0] in banned or any(mod == b or mod.startswith(b + ".") for b in banned):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    return bad


def test_domain_imports_no_framework_or_other_layer() -> None:
    assert (
        offenders(
            "domain",
            FRAMEWORKS
            + ("fleet.db", "fleet.services", "fleet.api", "fleet.mqtt", "fleet.discovery", "fleet.cli"),
        )
        == []
    )


def test_services_do_not_import_transports() -> None:
    assert (
        offenders(
            "services",
            (
                "fastapi",
                "starlette",
                "paho",
                "zeroconf",
                "fleet.api",
                "fleet.mqtt",
                "fleet.discovery",
                "fleet.cli",
            ),
        )
        == []
    )


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("from sqlalchemy import select\nimport paho.mqtt.client\n")
    assert {"sqlalchemy", "paho.mqtt.client"} <= imports(f)
