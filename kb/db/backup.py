"""Backup and restore of a whole database, backend to same backend: every table (models and their graphs,
claims and circuits with every revision, accounts with their password hashes and token hashes, render jobs),
row ids and all. A claim file (``kb claims export``) is the portable, shareable subset; this is the copy.

SQLite (the embedded default): sqlite3's online backup API copies a consistent snapshot page by page; in WAL
mode writers go on meanwhile, so it is safe while ``kb serve`` runs. PostgreSQL: ``pg_dump --format=custom``
(a consistent snapshot, also safe while serving) and ``pg_restore --clean --single-transaction``: the client
tools must be installed. A backup file says which it is by its first bytes.

Not in the database, so not in a backup: the rendered pictures when they are files (KB_ARTIFACT_STORE=files,
the default on SQLite: copy ``KB_STORAGE_DIR`` beside the backup; the database store's are rows, so in it) and
the serving graph files (rebuilt from the database when missing).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa

from kb.db.engine import engine_for
from kb.errors import Problem

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
_NAMES = {"sqlite": "an SQLite", "postgresql": "a PostgreSQL"}
COUNTED = {"model": "models", "kb_user": "users", "circuit": "circuits", "claim": "claims"}  # a refusal names them


class BackupProblem(Problem):
    code = "BAD_INPUT"


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def backup(url: str, dest: Path) -> int:
    """Write a backup of the database at ``url`` to ``dest`` (through a temporary file beside it, renamed when
    complete); its size in bytes."""
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        if backend(url) == "sqlite":
            _sqlite_copy(_sqlite_path(url, must_exist=True), tmp, journal="DELETE")  # one self-contained file
        else:
            _pg("pg_dump", ["--format=custom", "--file", str(tmp)], url)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest.stat().st_size


def kind_of(path: Path) -> str:
    """Which backend wrote this backup, from its first bytes (BackupProblem if neither)."""
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return "sqlite"
    if head.startswith(PG_MAGIC):
        return "postgresql"
    raise BackupProblem(f"{path} is not a backup made by kb backup (neither an SQLite file nor a pg_dump archive)")


def holds(url: str) -> dict[str, int]:
    """The rows a restore would replace, by table (those with none left out)."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            counts = {
                t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in COUNTED if t in present
            }
    finally:
        engine.dispose()
    return {t: n for t, n in counts.items() if n}


def restore(url: str, src: Path, *, replace: bool = False) -> None:
    """Replace the database at ``url`` by the backup ``src``. Refused if the database holds models, users,
    circuits or claims, unless ``replace``; and if the backup is of the other backend."""
    kind, target = kind_of(src), backend(url)
    if kind != target:
        raise BackupProblem(
            f"{src} is {_NAMES[kind]} backup and the database is {target}: "
            "move between backends with kb claims export and kb claims import"
        )
    if not replace and (held := holds(url)):
        what = ", ".join(f"{n} {COUNTED[t]}" for t, n in held.items())
        raise BackupProblem(f"the database already holds {what}: restore into an empty one, or pass --replace")
    if kind == "sqlite":
        _sqlite_check(src)
        _sqlite_copy(src, _sqlite_path(url, must_exist=False), journal="WAL")  # as kb.db.engine opens it
    else:
        restore_options = ["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction"]
        _pg("pg_restore", [*restore_options, "--exit-on-error"], url, str(src))


def _sqlite_path(url: str, must_exist: bool) -> Path:
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        raise BackupProblem("an in-memory SQLite database has nothing to back up or restore into")
    path = Path(database)
    if must_exist and not path.is_file():
        raise BackupProblem(f"there is no database at {path}")
    return path


def _sqlite_copy(src: Path, dest: Path, journal: str) -> None:
    """sqlite3's online backup: a consistent copy while others read and write ``src`` (all pages in one step,
    under one read transaction: in WAL mode writers go on, and their later commits are not in the copy)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(src, timeout=30)
    try:
        target = sqlite3.connect(dest, timeout=30)
        try:
            source.backup(target)
            target.execute(f"PRAGMA journal_mode={journal}")
        finally:
            target.close()
    finally:
        source.close()


def _sqlite_check(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # a backup is in rollback-journal mode: no -shm
    try:
        ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupProblem(f"{path} is not a readable SQLite file: {exc}") from None
    finally:
        conn.close()
    if ok != "ok":
        raise BackupProblem(f"{path} is damaged: {ok}")
    if "alembic_version" not in tables:
        raise BackupProblem(f"{path} is an SQLite file but not a Circuit KB database")


def _pg(tool: str, args: list[str], url: str, *files: str) -> None:
    """Run a PostgreSQL client tool on the database at ``url``; its first error as one line if it fails.
    The password goes in PGPASSWORD, out of the process list."""
    path = shutil.which(tool)
    if path is None:
        raise BackupProblem(f"{tool} is not installed: it comes with the PostgreSQL client tools")
    parsed = sa.engine.make_url(url)
    uri = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    done = subprocess.run([path, *args, "--dbname", uri, *files], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        first = next((line for line in lines if "error" in line), lines[0] if lines else f"exit {done.returncode}")
        raise BackupProblem(f"{tool} failed: {first[:300]}")
