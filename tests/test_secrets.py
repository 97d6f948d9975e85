"""No secret is ever written down: not in output, logs, the database, the IQ store, the spool
or a report notebook.

The end-to-end test runs the real command against real parts (the embedded PostgreSQL with
password-protected roles, moto's S3 server, the emulator, a papermill kernel) with a password
in the database URL, a ``?password=`` query, S3 keys in the environment and in an
``s3://KEY:SECRET@`` URL, then greps every place anything was written for each secret.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import nbformat
import pytest
import sqlalchemy as sa
import support
from sqlalchemy.pool import NullPool

from heimdall_lab import spool
from heimdall_lab.cli import main
from heimdall_lab.errors import StorageError, ValidationError
from heimdall_lab.notebooks import NotebookError, run_notebook
from heimdall_lab.store import IQStore
from heimdall_lab.urls import (
    has_secret,
    is_secret_name,
    mask_url,
    redact,
    secrets_in,
    split_credentials,
)

DB_PASSWORD = "Sup3rS3cretPW"
QUERY_PASSWORD = "QueryPW9"
S3_SECRET = "S3cr3tKeyXYZ"  # AWS_SECRET_ACCESS_KEY in the environment
URL_S3_SECRET = "UrlS3cretABC"  # in an s3://KEY:SECRET@bucket URL
SECRETS = (DB_PASSWORD, QUERY_PASSWORD, S3_SECRET, URL_S3_SECRET)


def assert_clean(where: str, text: str | bytes) -> None:
    """Fail naming the place and the secret found there."""
    data = text.encode() if isinstance(text, str) else text
    found = [s for s in SECRETS if s.encode() in data]
    assert not found, f"{where} holds {found}"


def test_the_grep_catches_a_leak():
    for secret in SECRETS:
        with pytest.raises(AssertionError, match=secret):
            assert_clean("a planted leak", f"before {secret} after".encode())
    assert_clean("clean text", "postgresql://u:***@h/db?password=***")


# -- the one redaction home -------------------------------------------------------------------


def test_mask_url_masks_userinfo_and_every_credential_query_name():
    url = (
        "https://h/x?password=a&sslpassword=b&token=c&X-Amz-Signature=d&X-Amz-Credential=e"
        "&X-Amz-Security-Token=f&sig=g&api_key=h&client_secret=i&sslmode=require&page=2"
    )
    assert mask_url(url) == (
        "https://h/x?password=***&sslpassword=***&token=***&X-Amz-Signature=***"
        "&X-Amz-Credential=***&X-Amz-Security-Token=***&sig=***&api_key=***"
        "&client_secret=***&sslmode=require&page=2"
    )
    assert mask_url(f"postgresql://u@h/db?password={QUERY_PASSWORD}") == (
        "postgresql://u@h/db?password=***"
    )
    assert mask_url("s3://KEY:SECRET@bucket/iq") == "s3://***@bucket/iq"
    assert is_secret_name("aws_secret_access_key") and not is_secret_name("sslmode")


def test_redact_masks_urls_pairs_and_known_secrets_in_free_text():
    text = (
        f"could not connect to postgresql://u:{DB_PASSWORD}@127.0.0.1:1/db (host=h "
        f"password={QUERY_PASSWORD}); S3Error at s3://AK:{URL_S3_SECRET}@b/x: "
        f"{{'secret': '{S3_SECRET}'}}"
    )
    for secret in SECRETS:
        assert secret in text  # the test can fail
    clean = redact(text)
    assert_clean("redacted text", clean)
    assert "postgresql://u:***@127.0.0.1:1/db" in clean and "s3://***@b/x" in clean
    assert "host=h" in clean and "S3Error" in clean
    assert redact(f"bare {S3_SECRET} here", secrets=[S3_SECRET]) == "bare *** here"


def test_split_credentials_and_secrets_in():
    assert split_credentials("s3://AK:SE%2FC@bucket/iq") == ("s3://bucket/iq", "AK", "SE/C")
    assert split_credentials("s3://***@bucket/iq") == ("s3://bucket/iq", "***", None)
    assert split_credentials("/data/a:b@c") == ("/data/a:b@c", None, None)
    found = secrets_in([f"postgresql://u:{DB_PASSWORD}@h/db?password={QUERY_PASSWORD}"])
    assert set(found) == {DB_PASSWORD, QUERY_PASSWORD}
    assert set(secrets_in({"client_kwargs": {"aws_secret_access_key": S3_SECRET}})) == {S3_SECRET}
    assert has_secret({"files": [f"s3://AK:{URL_S3_SECRET}@b/x"]})
    assert not has_secret(["s3://bucket/x", "2026-01-01T00:00", 3])


# -- the IQ store with credentials in its URL -------------------------------------------------


def test_iq_store_takes_keys_out_of_the_url_and_never_shows_them(s3_url, caplog):
    caplog.set_level(logging.DEBUG)
    bucket_and_prefix = s3_url.split("://", 1)[1]
    url = f"s3://AKIDURL:{URL_S3_SECRET}@{bucket_and_prefix}"
    store = IQStore(url)
    assert store.url == f"s3://***@{bucket_and_prefix}" and URL_S3_SECRET not in repr(store)
    assert (store.fs.key, store.fs.secret) == ("AKIDURL", URL_S3_SECRET)
    written = store.write(_small_capture(), capture_id="dcf")
    assert written.url == f"s3://***@{bucket_and_prefix}/captures/dcf.zarr"
    # The masked URL reads it back with the environment's credentials.
    assert IQStore(store.url).list() == ["dcf"]
    missing = IQStore(f"s3://AKIDURL:{URL_S3_SECRET}@no-such-bucket-{uuid.uuid4().hex[:8]}/x")
    with pytest.raises(StorageError, match="not found") as err:
        missing.write(_small_capture(), capture_id="dcf")
    assert "s3://***@no-such-bucket" in str(err.value)
    assert_clean("the StorageError", str(err.value))
    assert_clean("the log", caplog.text)


def test_credentials_in_a_non_s3_url_are_refused_without_showing_them():
    with pytest.raises(ValidationError, match=r"ftp://u:\*\*\*@host") as err:
        IQStore(f"ftp://u:{DB_PASSWORD}@host/iq")
    assert_clean("the ValidationError", str(err.value))


def test_the_spool_keeps_a_masked_store_url_and_says_sync_uses_the_environment(tmp_path, caplog):
    target = f"s3://AKIDURL:{URL_S3_SECRET}@bucket/heimdall"
    spool.keep_iq(_small_capture(), "dcf", target, tmp_path)
    kept = json.loads((spool.spool_root(tmp_path) / "dcf" / "iq.json").read_text())
    assert kept["target"] == "s3://***@bucket/heimdall"
    assert "sync uploads with the environment's" in caplog.text
    for path in spool.spool_root(tmp_path).rglob("*"):
        if path.is_file():
            assert_clean(str(path), path.read_bytes())


def _small_capture():
    from heimdall_lab import tutorial

    return tutorial.open_dcf77()


# -- the runner hands credentials to the kernel through the environment ----------------------


def _write_probe(nb: nbformat.NotebookNode, folder: Path) -> Path:
    """Save a small test notebook with a Python 3 kernel as ``probe.ipynb``."""
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    source = folder / "probe.ipynb"
    nbformat.write(nb, source)
    return source


def test_a_failing_run_keeps_credentials_out_of_the_report_and_restores_the_environment(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", "postgresql://before@127.0.0.1:1/db")
    url = f"postgresql://u:{DB_PASSWORD}@127.0.0.1:1/db"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "database_url = None  # None: HEIMDALL_DATABASE_URL", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(
            # The password spelled backwards: only the kernel's output could leak it.
            "import os\n"
            "url = os.environ['HEIMDALL_DATABASE_URL']\n"
            f"print('kernel got it:', url.endswith('{DB_PASSWORD[::-1]}'[::-1] "
            "+ '@127.0.0.1:1/db'), database_url is None)\n"
            "raise RuntimeError(f'cannot connect to {url}')"
        ),
    ]
    source = _write_probe(nb, tmp_path)
    with pytest.raises(NotebookError, match=r"RuntimeError: cannot connect to postgresql://u:\*"):
        run_notebook(source, {"database_url": url}, output_dir=tmp_path / "reports", run_id="p1")
    assert os.environ["HEIMDALL_DATABASE_URL"] == "postgresql://before@127.0.0.1:1/db"
    (report,) = (tmp_path / "reports").rglob("probe-p1.ipynb")
    text = report.read_text()
    assert_clean("the report", text)
    executed = nbformat.read(report, as_version=4)
    assert "kernel got it: True True" in text  # the value, from the environment
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.tags)
    assert "database_url = None" in injected.source
    assert "postgresql://u:***@127.0.0.1:1/db (given to the kernel in HEIMDALL_DATABASE_URL)" in (
        injected.source
    )
    assert executed.metadata.papermill.parameters == {"database_url": mask_url(url)}


# -- one real run, then grep everything -------------------------------------------------------


def _database_rows(url: str) -> str:
    """Every row of every table of a database, as text."""
    engine = sa.create_engine(
        url.replace("postgresql:", "postgresql+psycopg2:", 1), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            return "\n".join(
                str(row)
                for table in list(tables)
                for row in conn.execute(sa.text(f'SELECT t::text FROM "{table}" t')).scalars()
            )
    finally:
        engine.dispose()


def _bucket_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=support.REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_no_secret_is_written_anywhere(
    embedded, moto_endpoint, tmp_path, monkeypatch, capfd, caplog
):
    caplog.set_level(logging.DEBUG)
    suffix = uuid.uuid4().hex[:8]
    owner, reader = f"hl_pw_{suffix}", f"hl_q_{suffix}"
    db_a, db_b = f"hl_a_{suffix}", f"hl_b_{suffix}"
    admin = sa.create_engine(embedded.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {owner} LOGIN PASSWORD '{DB_PASSWORD}'"))
        conn.execute(sa.text(f"CREATE ROLE {reader} LOGIN PASSWORD '{QUERY_PASSWORD}'"))
        conn.execute(sa.text(f"CREATE DATABASE {db_a} OWNER {owner}"))
        conn.execute(sa.text(f"CREATE DATABASE {db_b} OWNER {reader}"))
    admin.dispose()
    host = f"{embedded.host}:{embedded.port}"
    url_a = f"postgresql://{owner}:{DB_PASSWORD}@{host}/{db_a}"  # the password in the URL
    url_b = f"postgresql://{reader}@{host}/{db_b}?password={QUERY_PASSWORD}"  # in the query
    # Database A through a proxy that is not listening yet: down for the capture, back for
    # the sync (spooled rows are synced into the database they were meant for, only).
    proxy = support.TcpProxy(embedded.port)
    back = f"postgresql://{owner}:{DB_PASSWORD}@127.0.0.1:{proxy.port}/{db_a}"
    down = f"{back}?password={QUERY_PASSWORD}"
    bucket_1, bucket_2 = f"iq1-{suffix}", f"iq2-{suffix}"
    iq_url_1 = f"s3://AKIDURL:{URL_S3_SECRET}@{bucket_1}/heimdall"
    iq_url_2 = f"s3://AKIDURL:{URL_S3_SECRET}@{bucket_2}/heimdall"
    for given, secrets in [
        (url_a, [DB_PASSWORD]),
        (url_b, [QUERY_PASSWORD]),
        (down, [DB_PASSWORD, QUERY_PASSWORD]),
        (iq_url_1, [URL_S3_SECRET]),
    ]:
        assert all(s in given for s in secrets)  # each grep below looks for what was given
    support.s3_env(monkeypatch, moto_endpoint)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("HEIMDALL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", url_a)
    monkeypatch.setenv("HEIMDALL_IQ_URL", iq_url_1)
    monkeypatch.chdir(tmp_path)
    seen: dict[str, str | bytes] = {}

    # 1. A capture while the database is down and the bucket is missing: everything is
    #    spooled. The console script at -vv in a subprocess: its stderr is every log record.
    command = ["-vv", "capture", "-f", "10e6", "-d", "1", "--seed", "0", "--fast", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "heimdall_lab.cli", *command, "--database-url", down],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen["capture stdout"], seen["capture stderr (-vv)"] = done.stdout, done.stderr
    assert "DEBUG" in done.stderr and f"{owner}:***@127.0.0.1" in done.stderr  # logged, masked
    (first,) = spool.pending()
    spooled = _files(spool.spool_root())
    assert {Path(p).name for p in spooled} >= {"iq.json", "capture.json", "measurements.jsonl"}
    assert b"s3://***@" + bucket_1.encode() in spooled[str(spool.spool_root() / first / "iq.json")]
    seen.update({f"spool {k}": v for k, v in spooled.items()})

    # 2. The store is back (the bucket exists), the database is reachable: sync.
    boto3.client("s3", endpoint_url=moto_endpoint, region_name=support.REGION).create_bucket(
        Bucket=bucket_1, CreateBucketConfiguration={"LocationConstraint": support.REGION}
    )
    proxy.start()
    try:
        assert main(["-vv", "sync", "--database-url", back]) == 0
    finally:
        proxy.stop()
    assert spool.pending() == []

    # 3. A notebook run given both URLs with their credentials as parameters.
    boto3.client("s3", endpoint_url=moto_endpoint, region_name=support.REGION).create_bucket(
        Bucket=bucket_2, CreateBucketConfiguration={"LocationConstraint": support.REGION}
    )
    second = uuid.uuid4().hex
    given = {"database_url": url_b, "iq_url": iq_url_2, "capture_id": second}
    small = {"duration_s": "1", "realtime": "False", "seed": "2"}
    parameters = [arg for item in {**given, **small}.items() for arg in ("-p", *item)]
    code = main(
        ["-vv", "run", "capture", "-q", "--output-dir", str(tmp_path / "reports"), *parameters]
    )
    assert code == 0
    assert os.environ["HEIMDALL_DATABASE_URL"] == url_a  # restored after the run
    assert os.environ["HEIMDALL_IQ_URL"] == iq_url_1
    out, err = capfd.readouterr()
    seen["in-process stdout"], seen["in-process stderr"] = out, err

    # Everything worked: the kernel reached database B and bucket 2 with the credentials.
    rows_a, rows_b = _database_rows(url_a), _database_rows(url_b)
    assert first in rows_a and second not in rows_a
    assert second in rows_b and "done" in rows_b
    assert f"s3://***@{bucket_1}/heimdall/captures/{first}.zarr" in rows_a
    assert f"storing IQ: could not write to s3://***@{bucket_1}" in rows_a  # error_message
    seen["database A rows"], seen["database B rows"] = rows_a, rows_b
    objects_1 = _bucket_objects(moto_endpoint, bucket_1)
    objects_2 = _bucket_objects(moto_endpoint, bucket_2)
    assert f"heimdall/captures/{first}.zarr/zarr.json" in objects_1
    assert f"heimdall/captures/{second}.zarr/heimdall-complete.json" in objects_2
    seen.update({f"s3 {bucket_1}/{k}": v for k, v in objects_1.items()})
    seen.update({f"s3 {bucket_2}/{k}": v for k, v in objects_2.items()})
    (report,) = (tmp_path / "reports").rglob(f"capture-{second}.ipynb")
    executed = nbformat.read(report, as_version=4)
    recorded = executed.metadata.papermill.parameters
    assert recorded["database_url"] == mask_url(url_b) and "password=***" in mask_url(url_b)
    assert recorded["iq_url"] == f"s3://***@{bucket_2}/heimdall"
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.tags)
    assert f"database_url: {mask_url(url_b)} (given to the kernel in" in injected.source
    assert f"capture {second}: done" in json.dumps([c.get("outputs") for c in executed.cells])
    seen.update(_files(tmp_path))  # the data home, the reports, anything else written here
    seen["log records"] = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert f"{owner}:***@" in seen["log records"]  # the logs name the database, masked

    for where, text in seen.items():
        assert_clean(where, text)


def test_a_receiver_password_is_not_in_the_frame_logs(caplog):
    """The WebSocket library dumps every frame at DEBUG; the SET auth password never shows."""
    from dataclasses import replace

    from heimdall_lab.emulate import emulated
    from heimdall_lab.kiwi.acquire import acquire

    with (
        caplog.at_level(logging.DEBUG),
        emulated(seed=0, receivers=["Purmerend"], realtime=False) as emu,
    ):
        receiver = replace(emu.receivers[0], password="RxPassw0rdQ")
        assert "RxPassw0rdQ" in receiver.password
        acquire([receiver], 10e6, 0.5, retries=0)
    assert any(r.name.startswith("heimdall_lab") for r in caplog.records)
    assert "RxPassw0rdQ" not in caplog.text


def test_a_malformed_database_url_shows_no_part_of_its_password():
    from heimdall_lab.db import get_engine

    url = "postgresql://u:p@ss:word99@127.0.0.1/db"
    with pytest.raises(ValidationError) as err:
        get_engine(url)
    assert "word99" not in str(err.value) and "p@ss" not in str(err.value)


def test_a_grid_shows_credentials_masked_and_knows_its_finished_runs(tmp_path):
    from heimdall_lab.batch import run_grid

    url = f"postgresql://u:{DB_PASSWORD}@127.0.0.1:1/db"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "database_url = None  # None: HEIMDALL_DATABASE_URL\nseed = 0",
            metadata={"tags": ["parameters"]},
        ),
        nbformat.v4.new_code_cell("print('seed', seed)"),
    ]
    source = _write_probe(nb, tmp_path)
    grid = {"database_url": [url], "seed": [1]}
    first = run_grid(source, grid, output_dir=tmp_path / "grid", n_workers=1)
    assert first["status"].tolist() == ["completed"], first["error"].tolist()
    assert_clean("the grid's table", first.to_string() + repr(first["parameters"].tolist()))
    assert first.loc[0, "database_url"] == mask_url(url)
    again = run_grid(source, grid, output_dir=tmp_path / "grid", n_workers=1)
    assert again["status"].tolist() == ["skipped"]  # the masked report counts as done
    for report in (tmp_path / "grid").rglob("*.ipynb"):
        assert_clean(str(report), report.read_text())
