"""The Multinode coordinator on Redis (see ``coordinator.redis_coordinator``)."""

from coordinator.redis_coordinator import RedisCoordinator, RedisMultinodeClient

__all__ = ["RedisCoordinator", "RedisMultinodeClient"]
