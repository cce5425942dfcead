"""Lab throughput and latency on local-shell boards (no emulator: what is measured is the lab itself).

Starts a private redis-server (AOF on, appendfsync everysec, loopback, a
free port) and board workers with ``lava-dispatch worker``, then measures:

1. submit-to-first-action latency on an idle board: from the call that
   submits a job (``Lab.submit`` in a warm process: validate, record,
   reserve, send the chain) to the moment the worker starts the job's first
   action; median and p95 over ``--latency-jobs`` jobs submitted one after
   the other;
2. jobs/minute for ``--jobs`` short jobs submitted at once over ``--boards``
   boards;
3. per-job scheduling overhead: the job's wall time on its board (start of
   the chain's first task to the end of finalize) minus the time in its
   actions, split into the engine's own setup and finalize (creating the
   runner, closing the console, writing results) and the rest (the lab:
   Celery messages, claims, records).

Targets: latency median under 50 ms; overhead under 100 ms per job.
Everything it starts is stopped at the end; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lab_helpers import Lab, RedisServer, local_job, make_tempdir, remove_tree, wait_for  # noqa: E402

FINAL = ("Complete", "Incomplete", "Canceled")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def job_times(r, job_id: str) -> dict[str, float]:
    from tasks.records import get_job, steps

    rec = get_job(r, job_id)
    ran = steps(r, job_id)
    actions = sum(d["duration"] for d in rec.get("durations") or [])
    wall = ran[-1]["t1"] - ran[0]["t0"]
    engine = sum(s.get("engine", 0.0) for s in ran)
    return {"wall": wall, "actions": actions, "engine": engine, "overhead": wall - actions,
            "lab": wall - actions - engine, "first_action": ran[1]["t0"], "start": ran[0]["t0"],
            "end": ran[-1]["t1"], "state": rec["state"], "board": rec["board"]}


def wait_all(r, job_ids: list[str], timeout: float) -> None:
    from tasks.keys import job_key

    pending = set(job_ids)

    def done() -> bool:
        pipe = r.pipeline(transaction=False)
        ids = list(pending)
        for job_id in ids:
            pipe.hget(job_key(job_id), "state")
        for job_id, state in zip(ids, pipe.execute()):
            if state in FINAL:
                pending.discard(job_id)
        return not pending
    wait_for(done, timeout, f"{len(pending)} jobs to end", interval=0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--latency-jobs", type=int, default=50)
    args = parser.parse_args()

    base = make_tempdir("lab-bench-")
    server = RedisServer(base, extra=["--appendfsync", "everysec"])
    lab = None
    try:
        server.start()
        lab = Lab(server, base)
        lab.apply_env()
        names = [f"bench{i + 1}" for i in range(args.boards)]
        for name in names:
            lab.start_worker(name, wait=False)
        for name in names:
            lab.wait_idle(name, 120)
        from tasks.scheduler import Lab as Scheduler

        sched = Scheduler(lab.r())
        r = sched.r
        text = local_job("bench", ["lava-test-case quick --shell true"])

        for _ in range(3):  # warm up this process and the workers
            wait_all(r, [sched.submit(text).job_id], 60)

        # 1. latency on an idle board, one job at a time
        latency, submit_call, overheads, lab_part, engine = [], [], [], [], []
        for _ in range(args.latency_jobs):
            t0 = time.time()
            submitted = sched.submit(text)
            t1 = time.time()
            wait_all(r, [submitted.job_id], 60)
            times = job_times(r, submitted.job_id)
            assert times["state"] == "Complete", times
            latency.append(times["first_action"] - t0)
            submit_call.append(t1 - t0)
            overheads.append(times["end"] - t0 - times["actions"])
            engine.append(times["engine"])
            lab_part.append(times["end"] - t0 - times["actions"] - times["engine"])

        # 2. throughput: all jobs at once over every board
        t0 = time.time()
        job_ids = [sched.submit(text).job_id for _ in range(args.jobs)]
        t_submitted = time.time()
        wait_all(r, job_ids, 60 + args.jobs * 2.0)
        runs = [job_times(r, job_id) for job_id in job_ids]
        t_end = max(run["end"] for run in runs)
        assert all(run["state"] == "Complete" for run in runs)
        per_board: dict[str, int] = {}
        for run in runs:
            per_board[run["board"]] = per_board.get(run["board"], 0) + 1
        busy_overhead = [run["overhead"] for run in runs]
        busy_lab = [run["lab"] for run in runs]
        busy_engine = [run["engine"] for run in runs]
        actions = [run["actions"] for run in runs]

        print(f"lab throughput bench: {args.boards} local-shell boards, Redis {server.url.split('@')[-1]} "
              f"(AOF everysec), {os.cpu_count()} CPUs")
        print(f"1. idle board, {args.latency_jobs} jobs one after another:")
        print(f"   submit-to-first-action latency: median {ms(statistics.median(latency))}, "
              f"p95 {ms(pct(latency, 95))}   (target: median < 50 ms)")
        print(f"   of which the submit call (validate, record, reserve, send): median "
              f"{ms(statistics.median(submit_call))}")
        print(f"   job wall time from submit minus time in actions: median {ms(statistics.median(overheads))}, "
              f"p95 {ms(pct(overheads, 95))}")
        print(f"     engine setup + finalize (runner, console close, result files): median "
              f"{ms(statistics.median(engine))}")
        print(f"     lab scheduling (submit, Celery messages, claims, records): median "
              f"{ms(statistics.median(lab_part))}, p95 {ms(pct(lab_part, 95))}   (target: < 100 ms)")
        print(f"2. {args.jobs} jobs submitted at once over {args.boards} boards:")
        print(f"   submitted in {t_submitted - t0:.2f} s; all ended after {t_end - t0:.2f} s: "
              f"{args.jobs / (t_end - t0) * 60:.0f} jobs/minute; per board {sorted(per_board.values())}")
        print(f"   time in actions per job: median {ms(statistics.median(actions))}")
        print(f"   per-job overhead on its board (wall - actions): median {ms(statistics.median(busy_overhead))}, "
              f"p95 {ms(pct(busy_overhead, 95))}")
        print(f"     engine setup + finalize: median {ms(statistics.median(busy_engine))}; lab scheduling: median "
              f"{ms(statistics.median(busy_lab))}, p95 {ms(pct(busy_lab, 95))}   (target: < 100 ms)")
        return 0
    finally:
        if lab is not None:
            lab.stop_all()
        server.kill()
        remove_tree(base)


if __name__ == "__main__":
    sys.exit(main())
