# The two set-up commands of the README: `make run` (the relay on an embedded SQLite database) and
# `make test` (the whole test suite). Both install missing Debian packages first.
SWIFT ?= swift
HOST ?= 127.0.0.1
PORT ?= 7878
DATABASE ?= ./flitz-relay.sqlite

.PHONY: deps test-deps build run test vectors vectors-check vectors-verify proto spec-check fuzz-ci fuzz

deps:
	@./scripts/install-deps.sh

test-deps:
	@./scripts/install-deps.sh --test

build: deps
	$(SWIFT) build

run: deps
	$(SWIFT) build --product flitz-relay
	$(SWIFT) build --product flitz
	exec .build/debug/flitz-relay serve --host $(HOST) --port $(PORT) --database $(DATABASE)

# The whole suite: Swift tests, regenerating the vectors byte for byte, the machine-readable spec checks, then
# the fuzz targets (built with sanitizers in Fuzz/.build; corpus replay and a fixed run each).
# The end-to-end tests run apart: they are synchronous and block a Swift concurrency thread while a child process
# works, and on a 2-core machine two of them starve every in-process test of the pool (docs/decisions.md).
# Both Swift test runs share one throwaway PostgreSQL server (scripts/postgres.sh, in POSTGRES_DIR): it is started
# before them, FLITZ_TEST_POSTGRES_URL names its maintenance database, and it is stopped afterwards even when a test
# run fails or is interrupted.
POSTGRES_DIR ?= .build/postgres

test: test-deps
	$(SWIFT) build --build-tests
	./scripts/postgres.sh run $(POSTGRES_DIR) -- sh -c \
		"$(SWIFT) test --skip-build --skip 'FlitzEndToEndTests\.' && $(SWIFT) test --skip-build --filter 'FlitzEndToEndTests\.'"
	FLITZ_VECTORS="$$($(SWIFT) build --show-bin-path)/flitz-vectors" bash scripts/check-vectors.sh
	bash scripts/check-specs.sh
	SWIFT=$(SWIFT) ./scripts/fuzz.sh ci

# Validates protocol/openapi.yaml and protocol/asyncapi.yaml and checks them against flitz_wire.proto
# (Python validators pinned in a venv under .build/spec-venv; see scripts/check_specs.py).
spec-check: deps
	bash scripts/check-specs.sh

# libFuzzer targets of Fuzz/ (Fuzz/README.md): a fixed, about 30 s run of each for CI, or FUZZ_SECONDS
# (default 600) per target, one after another, keeping new inputs in Fuzz/.build/fuzz-long/.
FUZZ_SECONDS ?= 600

fuzz-ci: deps
	SWIFT=$(SWIFT) ./scripts/fuzz.sh ci

fuzz: deps
	SWIFT=$(SWIFT) ./scripts/fuzz.sh long $(FUZZ_SECONDS)

# Regenerates vectors/*.json from fixed seeds (see protocol/vectors.md).
vectors: deps
	$(SWIFT) run flitz-vectors "$(CURDIR)/vectors"

# Fails with the diff unless regenerating the vectors gives exactly the committed files (vectors/README.md).
vectors-check: deps
	./scripts/check-vectors.sh

# Runs every committed vector against this build and prints the pass/fail table.
vectors-verify: deps
	$(SWIFT) build --product flitz
	"$$($(SWIFT) build --show-bin-path)/flitz" vectors verify vectors

# Regenerates the committed protobuf code (needs protoc and protoc-gen-swift 1.39; not run by CI).
proto:
	protoc --swift_out=Sources/FlitzWire/Generated --swift_opt=Visibility=Public -I protocol protocol/flitz_wire.proto
	protoc --swift_out=Sources/FlitzProtocol/Generated --swift_opt=Visibility=Public -I protocol protocol/flitz_session.proto
