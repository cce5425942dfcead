"""A Redis primary, its replica and three sentinels of our own on free 127.0.0.1 ports (tests and benchmarks).

The sentinels declare the primary down after ``down_after_ms`` without an
answer and fail over to the replica; every wait is a condition with a deadline.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab_helpers import RedisServer, free_port, wait_for

MASTER = "lab"


class SentinelSet:
    """``primary`` + ``replica`` (both AOF on) watched by three sentinels (quorum 2)."""

    def __init__(self, base: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 url_options: str = ""):
        self.base = base
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.url_options = url_options
        for name in ("primary", "replica"):
            (base / name).mkdir(parents=True, exist_ok=True)
        self.primary = RedisServer(base / "primary")
        self.replica = RedisServer(base / "replica")
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER}/0" + (f"?{self.url_options}" if self.url_options else "")

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        wait_for(lambda: self.primary.client().info("replication").get("connected_slaves") == 1
                 and self.replica.client().info("replication").get("master_link_status") == "up", 20,
                 "the replica to sync with the primary")
        for index, port in enumerate(self.sentinel_ports):
            conf = self.base / f"sentinel-{index}.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {self.base}", f"logfile {self.base}/sentinel-{index}.log",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {MASTER} 1", ""]))
            self.sentinels.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))

        def ready() -> bool:
            for port in self.sentinel_ports:
                s = self.sentinel(port)
                if len(s.sentinel_sentinels(MASTER)) != 2 or len(s.sentinel_slaves(MASTER)) != 1:
                    return False
            return True
        wait_for(ready, 30, "three sentinels that know each other and the replica")
        return self

    def sentinel(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)

    def master_port(self) -> int | None:
        """The primary's port as a majority of the sentinels reports it (None while they disagree)."""
        ports = []
        for port in self.sentinel_ports:
            try:
                address = self.sentinel(port).sentinel_get_master_addr_by_name(MASTER)
            except Exception:  # noqa: BLE001 - a sentinel that does not answer has no say
                continue
            if address:
                ports.append(int(address[1]))
        best = max(set(ports), key=ports.count) if ports else None
        return best if best is not None and ports.count(best) >= 2 else None

    def client(self):
        """A client of the current primary, through the sentinels (what the lab's own processes use)."""
        from tasks.config import redis_client

        return redis_client(self.url, socket_timeout=5)

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.primary.kill()
        self.replica.kill()
