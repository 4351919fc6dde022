# XfrmLab: `make run` and `make test` are all a newcomer needs (README.md).
SWIFT ?= swift
BIN := .build/debug
export PATH := $(PATH):/opt/swift/usr/bin:/usr/sbin:/sbin

.PHONY: deps build build-tests run test test-host bench clean gc docs fuzz

deps:
	@Scripts/install-deps.sh

build: deps
	$(SWIFT) build

build-tests: deps
	$(SWIFT) build --build-tests

# The main job: north/east/west up, connectivity and fwmark routing proven, report, down.
run: build
	$(BIN)/xfrmlab run connectivity --topology north-east-west

# The whole suite on this machine's kernel: everything but the 1,000-host test, which runs
# alone afterwards (it holds the kernel's RTNL lock for seconds), then two suites at once.
test-host: build-tests
	$(SWIFT) test --skip-build --skip LoadTests
	$(SWIFT) test --skip-build --filter LoadTests
	Scripts/two-suites.sh

test: test-host

bench: deps
	$(SWIFT) build -c release --product xfrmlab
	.build/release/xfrmlab bench

# Remove what killed runs left behind (never a live run's namespaces).
gc: build
	$(BIN)/xfrmlab gc

# libFuzzer over the topology loader and the netlink parsers (FUZZ_SECONDS, default 120).
FUZZ_SECONDS ?= 120
fuzz: deps
	$(SWIFT) build --scratch-path .build-fuzz --sanitize fuzzer -Xswiftc -DFUZZING --product XfrmLabFuzz
	mkdir -p .build-fuzz/corpus
	.build-fuzz/debug/XfrmLabFuzz -max_total_time=$(FUZZ_SECONDS) -max_len=8192 .build-fuzz/corpus Fixtures/fuzz-seeds

# Pictures of the default topologies for README.md.
docs: build
	$(BIN)/xfrmlab graph north-east-west -o Docs/north-east-west
	$(BIN)/xfrmlab graph client1-client2-server -o Docs/client1-client2-server

clean:
	rm -rf .build
