#!/bin/bash
# Run the demo job end to end on the emulated x86_64 board: serve the board
# images over HTTP on 127.0.0.1:8642 (as a lab's file server would), run
# sample_jobs/qemu-demo.yaml with `lava-dispatch run`, print the results.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=$(bash tests/boards/build-images.sh | tail -n 1)
PORT=8642
PYTHON=${PYTHON:-python3}

"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$IMAGES" "$PORT" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 100); do
	"$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
	kill -0 $SERVER 2>/dev/null || { echo "demo: cannot serve images on 127.0.0.1:$PORT (port in use?)" >&2; exit 1; }
	sleep 0.05
done

"$PYTHON" -m tasks.cli run sample_jobs/qemu-demo.yaml --device sample_jobs/devices/kvm01.yaml \
	--output-dir output/qemu-demo
