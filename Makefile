.PHONY: install run test faults lint format mypy bench all

install:
	python3 -m pip install -e '.[dev]'

run:
	conveyor serve

test:
	scripts/test

# the fault suite; writes docs/reliability.md (scripts/faults --fast: the CI subset)
faults:
	scripts/faults

lint:
	ruff check conveyor tests bench examples
	ruff format --check conveyor tests bench examples

format:
	ruff format conveyor tests bench examples
	ruff check --fix conveyor tests bench examples

mypy:
	mypy

bench:
	python3 -m bench.local_throughput
	python3 -m bench.celery_throughput
	python3 -m bench.documents

all: lint mypy test
