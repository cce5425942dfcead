"""``/metrics``: the lab in Prometheus' text format (prometheus-client), readable without a token.

What each server answers, and where it comes from:

- read at scrape time from Redis (the same on every server of a lab):
  ``lava_dispatch_devices{device_type,health,state}``,
  ``lava_dispatch_devices_offline{device_type}``,
  ``lava_dispatch_queue_length{device_type}``,
  ``lava_dispatch_queue_oldest_seconds{device_type}``,
  ``lava_dispatch_jobs_running{device_type}``,
  ``lava_dispatch_jobs_scheduled{device_type}`` (and the older
  ``lava_dispatch_boards{state}``, ``lava_dispatch_queued_jobs``);
- counted by the archiver, once per job, into Redis (``server.jobmetrics``,
  also lab-wide): ``lava_dispatch_jobs_finished_total``,
  ``lava_dispatch_health_checks_total``, ``lava_dispatch_test_cases_total``,
  the histograms ``lava_dispatch_job_duration_seconds`` and
  ``lava_dispatch_job_wait_seconds`` (submit to start);
- this server process only: ``lava_dispatch_http_request_duration_seconds``
  (by method, route template and status class), so with several servers
  each one's is its own (sum them in a query).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from server import jobmetrics, labview
from server.service import LabService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LabCollector(Collector):
    """The lab's gauges, read when Prometheus scrapes, and the archiver's counts of ended jobs."""

    def __init__(self, service: LabService):
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        devices = service.devices(show_all=True)
        by_type = labview.queues(service.r, devices)
        gauge = GaugeMetricFamily("lava_dispatch_devices", "Boards by device type, health and state (LAVA's "
                                  "names).", labels=["device_type", "health", "state"])
        offline = GaugeMetricFamily("lava_dispatch_devices_offline", "Boards whose worker is not running "
                                    "(no heartbeat), by device type.", labels=["device_type"])
        counts: dict[tuple[str, str, str], int] = {}
        for device in devices:
            key = (device["type"], device["health"], device["state"])
            counts[key] = counts.get(key, 0) + 1
        for entry in by_type:
            if not entry.boards:
                continue
            for health in labview.DEVICE_HEALTHS:
                for state in labview.DEVICE_STATES:
                    gauge.add_metric([entry.name, health, state], counts.get((entry.name, health, state), 0))
            offline.add_metric([entry.name], sum(1 for d in devices if d["type"] == entry.name and not d["online"]))
        yield gauge
        yield offline
        length = GaugeMetricFamily("lava_dispatch_queue_length", "Jobs waiting for a board, by the device type "
                                   "they asked for.", labels=["device_type"])
        oldest = GaugeMetricFamily("lava_dispatch_queue_oldest_seconds", "How long the longest-waiting job of "
                                   "the device type has waited (0: none waits).", labels=["device_type"])
        now_ms = int(time.time() * 1000)
        for entry in by_type:
            length.add_metric([entry.name], entry.queued)
            oldest.add_metric([entry.name], round(entry.oldest_seconds(now_ms), 3))
        yield length
        yield oldest
        active = labview.active_jobs(service.r)
        for name, states, text in (("running", ("Running", "Canceling"), "Jobs running on a board"),
                                   ("scheduled", ("Scheduled",), "Jobs given a board, not started yet")):
            family = GaugeMetricFamily(f"lava_dispatch_jobs_{name}", f"{text}, by device type.",
                                       labels=["device_type"])
            for entry in by_type:
                family.add_metric([entry.name], sum(1 for _, t, s in active if t == entry.name and s in states))
            yield family
        boards = GaugeMetricFamily("lava_dispatch_boards", "Registered boards by worker state.", labels=["state"])
        for state, test in (("idle", lambda d: d["online"] and d["state"] == "Idle"),
                            ("busy", lambda d: d["online"] and d["state"] != "Idle"),
                            ("offline", lambda d: not d["online"])):
            boards.add_metric([state], sum(1 for d in devices if test(d)))
        yield boards
        yield GaugeMetricFamily("lava_dispatch_queued_jobs", "Jobs waiting for a board.",
                                value=sum(entry.queued for entry in by_type))
        yield from ended_jobs(service.r)


def ended_jobs(r: Any) -> Iterator[Metric]:
    figures = jobmetrics.read(r)
    for kind, name, text, bounds in jobmetrics.families():
        if bounds is None:
            labels = ["device_type", "result" if kind == "test_cases" else "health"]
            counter = CounterMetricFamily(name, text, labels=labels)
            for values, count in sorted(figures[kind].items()):
                counter.add_metric(list(values), count)
            yield counter
        else:
            histogram = HistogramMetricFamily(name, text, labels=["device_type"])
            for device_type, (buckets, total) in sorted(figures[kind].items()):
                histogram.add_metric([device_type], jobmetrics.cumulative(buckets, bounds), total)
            yield histogram


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class LatencyMiddleware:
    """Times every HTTP request to its response's first byte, by method, route template and status class."""

    def __init__(self, app: ASGIApp, histogram: Histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        done = False

        async def timed_send(message: Any) -> None:
            nonlocal done
            if message["type"] == "http.response.start" and not done:
                done = True
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.histogram.labels(scope["method"], template, f"{message['status'] // 100}xx").observe(
                    time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


def registry(service: LabService) -> tuple[CollectorRegistry, Histogram]:
    """A registry of the app's own (not the process-wide default: tests run several apps in one process)."""
    # The *_created series say nothing a lab needs, and double the output.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    found = CollectorRegistry(auto_describe=False)
    latency = Histogram("lava_dispatch_http_request_duration_seconds", "API and page latency of this server "
                        "(to the first byte), by method, route and status class.",
                        labelnames=("method", "route", "status"), registry=found)
    found.register(LabCollector(service))
    return found, latency


def render(found: CollectorRegistry) -> bytes:
    return generate_latest(found)


__all__ = ["LabCollector", "LatencyMiddleware", "registry", "render", "CONTENT_TYPE"]
