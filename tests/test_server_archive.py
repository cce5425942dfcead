"""The durable archive: jobs, results and logs in and out, idempotence, listing, retention, health history.

Every test runs on SQLite and on PostgreSQL (a throw-away database each).
"""

from __future__ import annotations

import threading
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from server import archive, logstore
from server.db import session
from server.models import Job, LogChunk, Result

pytest_plugins = ("server_fixtures",)  # db_url, engine, lab_env: on SQLite and PostgreSQL

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def record(job_id: str | int, **fields) -> dict:
    data = {"id": str(job_id), "job_name": f"job {job_id}", "submitter": "alice", "device_type": "kvm",
            "board": "qemu01", "state": "Finished", "health": "Complete", "priority": "medium",
            "submit_time": T0, "start_time": T0 + timedelta(seconds=2), "end_time": T0 + timedelta(seconds=60),
            "definition": "job_name: x\ndevice_type: kvm\n", "tags": ["fast"]}
    data.update(fields)
    return data


def log_line(n: int) -> str:
    return f"- {{dt: '2026-03-01T12:00:{n % 60:02d}.{n % 1000:03d}', lvl: info, msg: 'line {n} of the log'}}"


RESULTS = [
    {"suite": "0_smoke", "definition": "smoke", "case": "kernel-version", "result": "pass", "level": "3.1"},
    {"suite": "0_smoke", "case": "memory", "result": "pass", "measurement": 223636, "units": "kB"},
    {"suite": "0_smoke", "case": "expected-failure", "result": "fail"},
    {"suite": "lava", "case": "job", "result": "fail", "error_type": "Test", "error_msg": "shell died"},
]


def count(engine, model) -> int:
    with session(engine) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


# ---------------------------------------------------------------- a job in and out


def test_a_job_reads_back_as_archived(engine):
    stored = archive.archive_job(record("12", error_type="Test", error_msg="shell died",
                                        failure_comment="flaky board", output_dir="lab-host-1:/srv/jobs/12"),
                                 RESULTS, (log_line(n) for n in range(10)), engine=engine)
    assert stored.id == "12"
    job = archive.get_job(12, engine=engine)
    assert job is not None
    assert (job.number, job.sub_id, job.description, job.actual_device, job.priority) == (12, None, "job 12",
                                                                                         "qemu01", 50)
    assert job.submit_time == T0 and job.submit_time.tzinfo is not None
    assert job.end_time - job.start_time == timedelta(seconds=58)
    assert job.tags == ["fast"] and job.definition.startswith("job_name: x")
    shown = job.to_dict()
    assert shown["device"] == "qemu01" and shown["health"] == "Complete" and shown["state"] == "Finished"
    assert shown["error_msg"] == "shell died" and shown["failure_comment"] == "flaky board"
    assert shown["output_dir"] == "lab-host-1:/srv/jobs/12"
    assert shown["submit_time"] == "2026-03-01T12:00:00+00:00"
    assert archive.get_job("13", engine=engine) is None


def test_results_keep_every_field_and_the_lava_suite(engine):
    archive.archive_job(record(7), RESULTS, [], engine=engine)
    results = archive.get_results(7, engine=engine)
    assert [(r.suite, r.name, r.result) for r in results] == [
        ("0_smoke", "kernel-version", "pass"), ("0_smoke", "memory", "pass"),
        ("0_smoke", "expected-failure", "fail"), ("lava", "job", "fail")]
    assert results[0].level == "3.1" and results[0].extra == {"definition": "smoke"}
    assert results[1].measurement == 223636.0 and results[1].units == "kB"
    assert results[3].extra == {"error_type": "Test", "error_msg": "shell died"}
    lava = archive.get_results("7", suite="lava", engine=engine)
    assert [r.to_dict()["metadata"]["error_type"] for r in lava] == ["Test"]


def test_a_multinode_member_is_n_dot_m(engine):
    archive.archive_job(record("40.1", multinode_group="40"), [], [], engine=engine)
    job = archive.get_job("40.1", engine=engine)
    assert job is not None and (job.number, job.sub_id, job.multinode_group) == (40, 1, "40")


@pytest.mark.parametrize("fields, message", [
    ({"id": "12a"}, "not a job id"),
    ({"id": "../etc"}, "not a job id"),
    ({"state": "Complete"}, "state: 'Complete' is not one of"),
    ({"health": "Good"}, "health"),
    ({"priority": 101}, "priority"),
    ({"tags": "fast"}, "tags"),
    ({"attempt": 3}, "attempt: not a field"),
    ({"device_type": None}, "device_type: required"),
    ({"submit_time": "yesterday"}, "not an ISO 8601 time"),
    ({"submit_time": 1700000000}, "a datetime or an ISO 8601 string"),
])
def test_a_bad_record_is_refused_and_nothing_is_stored(engine, fields, message):
    with pytest.raises(ValueError, match=message):
        archive.archive_job(record(5, **fields), [], ["a line"], engine=engine)
    assert count(engine, Job) == 0 and count(engine, LogChunk) == 0


def test_a_bad_result_rolls_the_whole_job_back(engine):
    with pytest.raises(ValueError, match="result: 'passed'"):
        archive.archive_job(record(5), [RESULTS[0], {"suite": "s", "case": "c", "result": "passed"}],
                            ["a line"], engine=engine)
    assert (count(engine, Job), count(engine, Result), count(engine, LogChunk)) == (0, 0, 0)


def test_iso_strings_and_naive_times_are_utc(engine):
    archive.archive_job(record(3, submit_time="2026-03-01T13:00:00+01:00", start_time="2026-03-01T12:00:05",
                               end_time=datetime(2026, 3, 1, 12, 1)), [], [], engine=engine)
    job = archive.get_job(3, engine=engine)
    assert job is not None
    assert job.submit_time == T0
    assert job.start_time == T0 + timedelta(seconds=5)
    assert job.end_time == T0 + timedelta(minutes=1)


# ---------------------------------------------------------------- idempotence


def test_archiving_a_job_again_replaces_it_whole(engine):
    archive.archive_job(record(9, health="Incomplete"), RESULTS, (log_line(n) for n in range(2500)),
                        engine=engine)
    archive.archive_job(record(9, health="Complete"), RESULTS[:1], (log_line(n) for n in range(30)),
                        engine=engine)
    archive.archive_job(record(9, health="Complete"), RESULTS[:1], (log_line(n) for n in range(30)),
                        engine=engine)
    assert count(engine, Job) == 1
    assert [r.name for r in archive.get_results(9, engine=engine)] == ["kernel-version"]
    assert archive.line_count(9, engine=engine) == 30 and count(engine, LogChunk) == 1
    assert archive.read_lines(9, 0, 100, engine=engine) == [log_line(n) for n in range(30)]
    job = archive.get_job(9, engine=engine)
    assert job is not None and job.health == "Complete"


def test_archivers_racing_on_one_job_leave_one_copy(engine):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def archiver(n: int) -> None:
        barrier.wait()
        try:
            archive.archive_job(record(21, failure_comment=f"archiver {n}"), RESULTS,
                                (log_line(i) for i in range(1500)), engine=engine)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=archiver, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert (count(engine, Job), count(engine, Result), count(engine, LogChunk)) == (1, len(RESULTS), 2)
    assert archive.line_count(21, engine=engine) == 1500


# ---------------------------------------------------------------- logs


def test_a_100000_line_log_reads_back_by_line_range(engine, monkeypatch):
    total = 100_000
    archive.archive_job(record(100), [], (log_line(n) + "\n" for n in range(total)), engine=engine)
    assert archive.line_count(100, engine=engine) == total
    assert count(engine, LogChunk) == total // logstore.CHUNK_LINES

    decompressed: list[int] = []
    real = logstore.decompress_chunk
    monkeypatch.setattr(logstore, "decompress_chunk", lambda data, n: decompressed.append(n) or real(data, n))

    assert archive.read_lines(100, 50_000, 50_100, engine=engine) == [log_line(n) for n in range(50_000, 50_100)]
    assert len(decompressed) == 1  # only the chunk holding those lines
    decompressed.clear()
    assert archive.read_lines(100, 999, 1001, engine=engine) == [log_line(999), log_line(1000)]
    assert len(decompressed) == 2
    assert archive.read_lines(100, 0, 3, engine=engine) == [log_line(0), log_line(1), log_line(2)]
    assert archive.read_lines(100, total - 2, total + 50, engine=engine) == [log_line(total - 2),
                                                                            log_line(total - 1)]
    assert archive.read_lines(100, total, total + 10, engine=engine) == []
    assert archive.read_lines(100, 10, 10, engine=engine) == []
    with pytest.raises(ValueError):
        archive.read_lines(100, -1, 10, engine=engine)


def test_archiving_and_reading_a_long_log_takes_bounded_memory(engine):
    archive.archive_job(record(1), [], (log_line(n) for n in range(2000)), engine=engine)  # warm the caches
    size = sum(len(log_line(n)) + 1 for n in range(100_000))
    tracemalloc.start()
    try:
        archive.archive_job(record(2), [], (log_line(n) for n in range(100_000)), engine=engine)
        _, written = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert len(archive.read_lines(2, 50_000, 50_100, engine=engine)) == 100
        _, read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written < size / 5, (written, size)  # a chunk at a time, never the whole log
    assert read < size / 5, (read, size)


def test_the_whole_log_streams_back_identical(engine):
    lines = [log_line(n) for n in range(3456)] + ["", "- {dt: x, lvl: target, msg: 'ünïcode ✓'}", ""]
    archive.archive_job(record(101), [], iter(lines), engine=engine)
    assert list(archive.iter_lines(101, engine=engine)) == lines
    assert list(archive.iter_lines(101, 3450, engine=engine)) == lines[3450:]
    assert list(archive.iter_lines(101, 99_999, engine=engine)) == []
    assert archive.read_lines(101, engine=engine) == lines
    assert archive.line_count(102, engine=engine) == 0 and archive.read_lines(102, 0, 5, engine=engine) == []


def test_log_items_are_split_into_lines(engine):
    archive.archive_job(record(103), [], ["a\n", "b\r\n", "c\nd\n", b"e\n", "f"], engine=engine)
    assert archive.read_lines(103, 0, 10, engine=engine) == ["a", "b", "c", "d", "e", "f"]


def test_log_chunks_are_compressed(engine):
    archive.archive_job(record(104), [], (log_line(n) for n in range(5000)), engine=engine)
    with session(engine) as s:
        stored = s.execute(select(func.sum(func.length(LogChunk.data)))).scalar_one()
    raw = sum(len(log_line(n)) + 1 for n in range(5000))
    assert stored < raw / 4


# ---------------------------------------------------------------- listing


def fill(engine) -> None:
    """30 jobs: numbers 1-27 single, 28.0-28.2 a multinode group; states, healths, types and submitters vary."""
    for n in range(1, 28):
        archive.archive_job(record(n, state="Finished" if n % 3 else "Running",
                                   health="Complete" if n % 2 else "Incomplete",
                                   device_type="kvm" if n % 4 else "bbb", submitter="bob" if n % 5 == 0 else "alice",
                                   board=f"qemu0{n % 3}"), [], [], engine=engine)
    for m in range(3):
        archive.archive_job(record(f"28.{m}", multinode_group="28"), [], [], engine=engine)


def test_list_jobs_orders_by_number_newest_first(engine):
    fill(engine)
    total, rows = archive.list_jobs(limit=8, engine=engine)
    assert total == 30
    assert [r.id for r in rows] == ["28.2", "28.1", "28.0", "27", "26", "25", "24", "23"]
    total, rows = archive.list_jobs(limit=8, offset=24, engine=engine)
    assert [r.id for r in rows] == ["6", "5", "4", "3", "2", "1"]  # 9 and 10 sort as numbers, not strings
    _, everything = archive.list_jobs(limit=100, engine=engine)
    pages = [r.id for offset in range(0, 30, 7) for r in archive.list_jobs(limit=7, offset=offset,
                                                                           engine=engine)[1]]
    assert pages == [r.id for r in everything] and len(set(pages)) == 30


@pytest.mark.parametrize("filters, expected", [
    ({"state": "Running"}, [n for n in range(27, 0, -1) if n % 3 == 0]),
    ({"health": "Incomplete"}, [n for n in range(27, 0, -1) if n % 2 == 0]),
    ({"device_type": "bbb"}, [n for n in range(27, 0, -1) if n % 4 == 0]),
    ({"submitter": "bob"}, [n for n in range(27, 0, -1) if n % 5 == 0]),
    ({"actual_device": "qemu00"}, [n for n in range(27, 0, -1) if n % 3 == 0]),
    ({"state": "Finished", "health": "Incomplete", "device_type": "bbb"},
     [n for n in range(27, 0, -1) if n % 3 and n % 2 == 0 and n % 4 == 0]),
])
def test_list_jobs_filters_and_counts(engine, filters, expected):
    fill(engine)
    total, rows = archive.list_jobs(**filters, limit=3, engine=engine)
    assert total == len(expected)
    assert [r.id for r in rows] == [str(n) for n in expected[:3]]
    total, rows = archive.list_jobs(**filters, limit=3, offset=3, engine=engine)
    assert [r.id for r in rows] == [str(n) for n in expected[3:6]]


def test_list_jobs_refuses_unknown_values_and_does_not_load_definitions(engine):
    fill(engine)
    with pytest.raises(ValueError, match="state"):
        archive.list_jobs(state="Complete", engine=engine)
    total, rows = archive.list_jobs(limit=0, engine=engine)
    assert (total, rows) == (30, [])
    _, rows = archive.list_jobs(limit=1, engine=engine)
    with pytest.raises(Exception, match="definition"):
        rows[0].definition  # noqa: B018 - deferred with raiseload: a listing never carries the YAML


def plan(engine, statement) -> str:
    """The database's plan for ``statement``, one text (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN)."""
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            return "\n".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        connection.exec_driver_sql("ANALYZE")
        connection.exec_driver_sql("SET enable_seqscan = off")  # can an index serve it? (tiny tables)
        return "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {compiled}"))


@pytest.mark.parametrize("filters", [{}, {"state": "Finished"}, {"health": "Complete"}, {"device_type": "kvm"},
                                     {"submitter": "alice"}, {"actual_device": "qemu01"}])
def test_list_jobs_counts_and_finds_pages_from_indexes_alone(engine, filters):
    fill(engine)
    count_query, ids_query, page_query = archive.list_queries(filters, 25, 50)
    sqlite = engine.dialect.name == "sqlite"
    for statement in (count_query, ids_query):  # never reads the table, never sorts
        text_plan = plan(engine, statement)
        if sqlite:
            assert "USING COVERING INDEX" in text_plan and "TEMP B-TREE" not in text_plan, text_plan
        else:
            assert "Index Only Scan" in text_plan and "Sort" not in text_plan, text_plan
            assert "Seq Scan" not in text_plan, text_plan
    text_plan = plan(engine, page_query)  # the page's rows by primary key
    if sqlite:
        assert "SEARCH jobs USING INDEX sqlite_autoindex_jobs_1 (id=?)" in text_plan, text_plan
    else:
        assert "Seq Scan" not in text_plan and "pk_jobs" in text_plan, text_plan


def test_a_log_range_reads_through_the_chunk_index(engine):
    archive.archive_job(record(1), [], (log_line(n) for n in range(3000)), engine=engine)
    text_plan = plan(engine, logstore.chunks_query("1", 1500, 1600))
    if engine.dialect.name == "sqlite":
        assert "SCAN" not in text_plan.replace("SCAN CONSTANT ROW", ""), text_plan
        assert "ix_log_chunks_job_id_first_line" in text_plan or "PRIMARY KEY" in text_plan, text_plan
    else:
        assert "Seq Scan" not in text_plan and "Index" in text_plan, text_plan


# ---------------------------------------------------------------- retention


def test_purge_deletes_finished_jobs_past_the_retention_with_their_results_and_logs(engine):
    now = datetime(2027, 6, 1, tzinfo=UTC)
    old = now - timedelta(days=400)
    archive.archive_job(record(1, end_time=old), RESULTS, (log_line(n) for n in range(1200)), engine=engine)
    archive.archive_job(record(2, end_time=old), RESULTS, ["x"], engine=engine)
    archive.archive_job(record(3, end_time=now - timedelta(days=100)), RESULTS, ["y"], engine=engine)
    archive.archive_job(record(4, state="Running", end_time=None, submit_time=old), RESULTS, ["z"],
                        engine=engine)
    assert archive.purge(now, engine=engine, batch=1) == 2  # several batches
    assert [r.id for r in archive.list_jobs(engine=engine)[1]] == ["4", "3"]
    assert count(engine, Result) == 2 * len(RESULTS)
    assert count(engine, LogChunk) == 2 and archive.line_count(1, engine=engine) == 0
    assert archive.purge(now, engine=engine) == 0
    assert archive.purge(now, days=30, engine=engine) == 1
    assert [r.id for r in archive.list_jobs(engine=engine)[1]] == ["4"]


def test_retention_days_come_from_the_environment(engine, monkeypatch):
    now = datetime(2027, 6, 1, tzinfo=UTC)
    archive.archive_job(record(1, end_time=now - timedelta(days=20)), [], [], engine=engine)
    monkeypatch.delenv("LAVA_DISPATCH_RETENTION_DAYS", raising=False)
    assert archive.retention_days() == 365
    assert archive.purge(now, engine=engine) == 0
    monkeypatch.setenv("LAVA_DISPATCH_RETENTION_DAYS", "0")
    assert archive.purge(now, engine=engine) == 0  # 0: keep for ever
    monkeypatch.setenv("LAVA_DISPATCH_RETENTION_DAYS", "10")
    assert archive.purge(now, engine=engine) == 1
    monkeypatch.setenv("LAVA_DISPATCH_RETENTION_DAYS", "soon")
    with pytest.raises(ValueError, match="not a number"):
        archive.retention_days()


# ---------------------------------------------------------------- device health


def test_health_changes_are_recorded_newest_first(engine):
    archive.record_health_change("qemu01", "Unknown", "Good", reason="health check passed",
                                 when=T0, engine=engine)
    archive.record_health_change("qemu01", "Good", "Bad", who="alice", reason="smoke from the PSU",
                                 when=T0 + timedelta(hours=1), engine=engine)
    archive.record_health_change("qemu02", "Unknown", "Good", engine=engine)
    history = archive.health_history("qemu01", engine=engine)
    assert [(h.old, h.new, h.who, h.reason) for h in history] == [
        ("Good", "Bad", "alice", "smoke from the PSU"), ("Unknown", "Good", None, "health check passed")]
    assert history[0].changed == T0 + timedelta(hours=1)
    assert len(archive.health_history("qemu01", limit=1, engine=engine)) == 1
    assert archive.health_history("bbb01", engine=engine) == []
    with pytest.raises(ValueError, match="new health"):
        archive.record_health_change("qemu01", "Good", "Broken", engine=engine)


def test_sql_injection_in_a_filter_is_only_a_value(engine):
    fill(engine)
    assert archive.list_jobs(submitter="alice' OR '1'='1", engine=engine) == (0, [])
    with session(engine) as s:
        assert s.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 30
