#!/bin/bash
# Make sure a Redis answers at LAVA_DISPATCH_REDIS_URL (default 127.0.0.1:6379);
# start a local redis-server if none does.
set -euo pipefail
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
	exit 0
fi
echo "ensure-redis: starting redis-server on 127.0.0.1:6379" >&2
mkdir -p /var/lib/redis /var/log/redis
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
	--dir /var/lib/redis --logfile /var/log/redis/lava-dispatch.log
for _ in $(seq 50); do
	redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && exit 0
	sleep 0.1
done
echo "ensure-redis: redis-server did not answer" >&2
exit 1
