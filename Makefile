# lava-dispatch: install, build the emulated boards, test, demo.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest

.PHONY: install images services lint test test-fast demo clean

install:
	bash deploy/install-deps.sh

images: install
	bash tests/boards/build-images.sh

services: install
	bash deploy/ensure-redis.sh

# ruff, mypy (strict on pipeline/ and coordinator/) and the import layers.
lint: install
	ruff check pipeline tasks coordinator server tests bench
	mypy pipeline coordinator tasks server
	lint-imports

# Everything, QEMU boards included (what CI runs).
test: install images services lint
	$(PYTEST) -q -ra

# A quick loop: no emulated boards, no worker processes.
test-fast: install services
	$(PYTEST) -q -m "not qemu and not lab"

# One sample job end to end on an emulated x86_64 board.
demo: install images
	bash deploy/demo.sh

clean:
	rm -rf output .pytest_cache
