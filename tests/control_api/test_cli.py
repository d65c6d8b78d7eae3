"""``fanz-media api``: creating the first admin, and refusing bad settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control_api.cli import main
from control_api.db import connect


def test_create_admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FANZ_ADMIN_PASSWORD", "a long password")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["--data-dir", str(tmp_path), "create-admin", "chief"]) == 0
    user_id = capsys.readouterr().out.strip()

    async def role() -> str:
        db = await connect(f"sqlite:///{tmp_path / 'fanz.db'}")
        try:
            return str(await db.fetchval("SELECT role FROM users WHERE id = $1", user_id))
        finally:
            await db.close()

    assert asyncio.run(role()) == "admin"
    # The same name twice is refused with a clear message, not a traceback.
    with pytest.raises(SystemExit) as info:
        main(["--data-dir", str(tmp_path), "create-admin", "chief"])
    assert info.value.code == 2
    assert "taken" in capsys.readouterr().err


def test_bad_database_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--data-dir", str(tmp_path), "--database-url", "mysql://x/y", "create-admin", "x"])
    assert info.value.code == 2
    assert "database_url" in capsys.readouterr().err
