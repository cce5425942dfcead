"""Placement through the idle index, at the scheduler level: a private redis-server, the real Lua scripts.

Boards are registered as a worker registers them; no worker process, no chain sent. The cost checks count
the Redis commands a script runs (``INFO commandstats`` counts the commands scripts call), never time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from lab_helpers import ROOT
from test_lab_scheduler import LOCAL, finish, lab, redis_server, register, submit  # noqa: F401 - fixtures

from tasks.keys import LAB, board_key, bucket_keys, group_request, job_key, type_keys

TYPE = "local-shell"


def busy(lab, board: str, tags: list[str] | None = None) -> str:
    """A job that takes ``board`` (which must be the only idle board it fits)."""
    job = submit(lab, tags=tags or [])
    assert job.board == board, (job.board, board)
    return job.job_id


def commands_of(lab, call) -> tuple[object, int]:
    """(the call's answer, how many Redis commands it made the server run, scripts' own calls included)."""
    lab.r.config_resetstat()
    answer = call()
    stats = lab.r.info("commandstats")
    # not counted: the probes themselves, and loading a script the first time it is called (NOSCRIPT, SCRIPT LOAD)
    counted = sum(v["calls"] - v.get("rejected_calls", 0) - v.get("failed_calls", 0) for k, v in stats.items()
                  if k.split("|")[0] not in ("cmdstat_info", "cmdstat_config", "cmdstat_script"))
    return answer, counted


def submit_group(lab, group_id: str, members: list[list[str]], device_types: list[str] | None = None,
                 queue_anyway: bool = False, priority: int = 50):
    """A multinode group's request as Lab.submit_group makes it: one need per member (its tags)."""
    types = device_types or [TYPE] * len(members)
    needs = [{"job": f"{group_id}.{i}", "device_type": t, "tags": tags}
             for i, (t, tags) in enumerate(zip(types, members, strict=True))]
    fields = {n["job"]: {"id": n["job"], "name": f"g [{i}]"} for i, n in enumerate(needs)}
    return lab.call("submit_group", group_id, json.dumps({"id": group_id}), json.dumps(needs), priority,
                    int(queue_anyway), json.dumps(fields), json.dumps(sorted(set(types))))


def submit_script(lab, tags: list[str], device_type: str = TYPE) -> list:
    """The submit script alone, as Lab.submit calls it after validation."""
    job_id = lab.new_id()
    needs = [{"job": job_id, "device_type": device_type, "tags": tags}]
    return lab.call("submit", job_id, json.dumps({"id": job_id}), json.dumps(needs), 50, 0, device_type)


def test_a_job_no_idle_board_serves_waits_without_blocking_the_jobs_behind_it(lab):
    register(lab, "plain")
    register(lab, "usb1", tags=["usb"])
    on_usb = busy(lab, "usb1", ["usb"])
    on_plain = busy(lab, "plain")
    usb_job = submit(lab, tags=["usb"], override="high")  # first in the queue, but only usb1 serves it
    untagged = submit(lab)
    assert usb_job.board is None and untagged.board is None
    _, placed = finish(lab, on_plain)
    assert [(a.job, a.board) for a in placed] == [(untagged.job_id, "plain")]
    assert lab.queue(TYPE) == [usb_job.job_id]
    _, placed = finish(lab, on_usb)  # the fitting board frees: it takes the waiting job
    assert [(a.job, a.board) for a in placed] == [(usb_job.job_id, "usb1")]
    assert lab.r.zcard(LAB.pending) == 0


def test_a_freed_board_takes_the_best_job_it_serves_priority_then_fifo_across_tag_sets(lab):
    register(lab, "usb1", tags=["usb", "fast"])
    first = busy(lab, "usb1")
    usb_low = submit(lab, tags=["usb"], priority="low")
    plain_medium = submit(lab)
    usb_medium = submit(lab, tags=["usb"])
    fast_high = submit(lab, tags=["fast"], override="high")
    plain_medium2 = submit(lab)
    order, current = [], first
    for _ in range(5):
        _, placed = finish(lab, current)
        current = placed[0].job
        order.append(current)
    assert order == [fast_high.job_id, plain_medium.job_id, usb_medium.job_id, plain_medium2.job_id,
                     usb_low.job_id]


def test_an_untagged_job_takes_a_plain_board_before_a_special_one(lab):
    register(lab, "special", tags=["usb"])
    register(lab, "plain")
    assert submit(lab).board == "plain"
    assert submit(lab, tags=["usb"]).board == "special"


def test_a_group_waits_for_all_its_boards_without_holding_them_or_blocking_single_jobs(lab):
    for name in ("b1", "b2", "b3", "b4"):
        register(lab, name)
    on_b1, on_b2 = busy(lab, "b1"), busy(lab, "b2")
    assert submit_group(lab, "100", [[], [], []]) == ["queued", []]  # three boards needed, two idle
    idle = type_keys(TYPE).idle
    assert sorted(lab.r.zrange(idle, 0, -1)) == ["b3", "b4"]
    assert lab.r.hget(job_key("100.0"), "state") == "Submitted"
    single = submit(lab)  # a single job is not held back by the waiting group
    assert single.board == "b3"
    _, placed = finish(lab, on_b1)  # b1 frees: b1 and b4 idle, still one short
    assert placed == [] and sorted(lab.r.zrange(idle, 0, -1)) == ["b1", "b4"]
    _, placed = finish(lab, on_b2)  # the third board: all members at once
    assert sorted(a.job for a in placed) == ["100.0", "100.1", "100.2"]
    assert sorted(a.board for a in placed) == ["b1", "b2", "b4"]
    assert {lab.r.hget(job_key(f"100.{i}"), "state") for i in range(3)} == {"Scheduled"}
    assert lab.r.zcard(LAB.pending) == 0 and lab.r.zcard(idle) == 0


def test_a_group_with_members_of_two_types_and_tags(lab):
    from pipeline.device import load_device

    register(lab, "shell1", tags=["usb"])
    other = load_device(LOCAL).model_copy(update={"device_type": "other-shell"})
    assert lab.register("other1", LOCAL.read_text(), other, node="other1@test", pid=1, supervisor_pid=0,
                        pid_file="/nonexistent")[0] == "free"
    lab.release("other1")
    on_other = submit_script(lab, [], "other-shell")
    assert on_other[0] == "scheduled" and on_other[1][0][1] == "other1"
    assert submit_group(lab, "200", [["usb"], []], [TYPE, "other-shell"]) == ["queued", []]
    assert lab.r.zscore(type_keys(TYPE).idle, "shell1") is not None
    _, placed = finish(lab, on_other[1][0][0])
    assert sorted((a.job, a.board) for a in placed) == [("200.0", "shell1"), ("200.1", "other1")]


def test_a_type_with_no_board_refuses_a_group_unless_queued_anyway(lab):
    register(lab, "b1")
    assert submit_group(lab, "300", [[], []], [TYPE, "no-such-type"]) == ["noboard", "no-such-type"]
    assert submit_group(lab, "301", [[], []], [TYPE, "no-such-type"], queue_anyway=True) == ["queued", []]
    assert lab.r.zscore(LAB.pending, group_request("301")) is not None
    assert lab.r.zscore(type_keys(TYPE).idle, "b1") is not None  # not held for the group


def test_a_board_with_a_new_tag_set_takes_the_jobs_queued_for_it(lab):
    register(lab, "b1")
    waiting = submit(lab, tags=["hdmi"])
    assert waiting.board is None
    register(lab, "hdmi1", tags=["hdmi"])  # its tag set is new to the type: the queued job is found
    assert lab.r.hget(job_key(waiting.job_id), "board") == "hdmi1"
    # The board is registered again without the tag: its old tag set goes with the last board that had it.
    _, placed = finish(lab, waiting.job_id)
    register(lab, "hdmi1")
    assert not lab.r.exists(bucket_keys(TYPE, ["hdmi"]).idle)
    assert lab.r.zscore(bucket_keys(TYPE, []).idle, "hdmi1") is not None


def test_a_dead_idle_board_leaves_the_index_on_another_boards_heartbeat_and_returns_on_its_own(lab):
    register(lab, "dead")
    register(lab, "alive")
    lab.r.hset(board_key("dead"), "heartbeat", 0)  # as if its worker stopped beating long ago
    lab.r.zadd(LAB.live, {"dead": 0})
    lab.heartbeat("alive", "alive@test", None)
    assert lab.r.zscore(type_keys(TYPE).idle, "dead") is None
    assert lab.r.zscore(bucket_keys(TYPE, []).idle, "dead") is None
    assert submit(lab).board == "alive"
    lab.heartbeat("dead", "dead@test", None)  # it beats again: indexed idle again, and takes work
    assert submit(lab).board == "dead"


def test_a_pick_that_finds_a_dead_board_drops_it_and_takes_a_live_one(lab):
    register(lab, "old")  # the oldest idle board: tried first
    register(lab, "new")
    lab.r.hset(board_key("old"), "heartbeat", 0)  # dead, but no heartbeat path ran yet
    assert submit(lab).board == "new"
    assert lab.r.zscore(type_keys(TYPE).idle, "old") is None


def test_placing_costs_the_same_whatever_the_number_of_idle_boards(lab):
    """A job whose tags no board has (the old scan's worst case: every idle board looked at)."""
    register(lab, "first")
    answer, few = commands_of(lab, lambda: submit_script(lab, ["no-such-tag"]))
    for n in range(100):
        register(lab, f"b{n:03d}")
    answer2, many = commands_of(lab, lambda: submit_script(lab, ["no-such-tag"]))
    assert answer == answer2 == ["queued", []]
    assert many == few
    assert lab.r.zcard(type_keys(TYPE).idle) == 101
    placed, cost = commands_of(lab, lambda: submit_script(lab, []))
    assert placed[0] == "scheduled" and cost <= few + 12  # taking a board: a few writes more


def test_a_freed_board_costs_the_same_whatever_the_queue_it_cannot_serve(lab):
    """A long queue of jobs no board serves (ahead in priority) is not walked by a freed board."""
    register(lab, "b1")
    costs = []
    for ahead in (5, 200):
        running = busy(lab, "b1")
        while lab.r.zcard(LAB.pending) < ahead:
            submit(lab, tags=["no-such-tag"], override="high")
        behind = submit(lab, priority="low")
        (_, placed), cost = commands_of(lab, lambda job=running: finish(lab, job))
        assert [(a.job, a.board) for a in placed] == [(behind.job_id, "b1")]
        costs.append(cost)
        finish(lab, behind.job_id)
    assert costs[0] == costs[1]
    assert lab.r.zcard(type_keys(TYPE).pending) == 200


def test_the_lua_tag_set_ids_are_the_python_ones(lab):
    register(lab, "b1", tags=["z", "a", "m"])
    assert lab.r.zscore(bucket_keys(TYPE, ["m", "z", "a", "a"]).idle, "b1") is not None


def test_bench_scale_quick_prints_its_figures(tmp_path, no_leftovers):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--no-nice"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                           "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    pattern = (r"scale: boards=(\d+) queued=(\d+) submit_p99_ms=([\d.]+) placement_p99_ms=([\d.]+) "
               r"lua_max_ms=([\d.]+) redis_bytes_per_board=(\d+) redis_bytes_per_finished_job=(\d+)")
    match = re.fullmatch(pattern, last)
    assert match, last
    assert int(match.group(1)) == 60 and int(match.group(2)) >= 60 and int(match.group(6)) > 0
