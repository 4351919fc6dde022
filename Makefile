# XfrmLab: `make run` and `make test` are all a newcomer needs (README.md).
SWIFT ?= swift
BIN := .build/debug
export PATH := $(PATH):/opt/swift/usr/bin:/usr/sbin:/sbin

.PHONY: deps build build-tests run test test-host bench clean gc docs fuzz vm-deps test-vm matrix

# Kernels `make test` boots in VMs besides running the suite on the host: Debian's 6.1 has ESP,
# VTI and xfrm interfaces, which this machine's kernel lacks, and runs the whole suite; Debian's
# 6.12 runs the tests whose verdict is a kernel's behaviour (bug reports, mark scenarios), so
# each of those has a verdict on the host and two VM kernels.
TEST_KERNELS ?= 6.1 6.12
SECOND_KERNEL_TESTS ?= BugReport|Scenario|MarkInheritance|DaemonFwmark|OverlappingSubnets
# `make matrix KERNELS="host 6.1 6.12 /path/to/bzImage"`: any kernels, on demand
# (aliases: 6.1 6.1-cloud 6.1-rt 6.12 6.12-cloud 6.12-rt; see `xfrmlab matrix --help`).
KERNELS ?= host 6.1 6.12
# The 1,000-host test runs by itself, after the rest, as in test-host.
MATRIX_FLAGS ?= --alone LoadTests

deps:
	@Scripts/install-deps.sh

# qemu, virtme-ng and the Debian kernels named (opt-in: only the VM targets need them).
vm-deps:
	@Scripts/install-vm-deps.sh $(sort $(TEST_KERNELS) $(KERNELS))

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

# The same suite on Debian's kernel in a VM (virtme-ng over qemu; TCG where nested KVM fails), with
# the host beside it, judged by Fixtures/matrix/expectations.yaml; the report lands in .build/matrix/latest/
# (report.txt, .json, junit.xml, and report.html, which headless Chromium then renders and checks).
test-vm: build-tests
	@Scripts/install-vm-deps.sh $(TEST_KERNELS)
	$(BIN)/xfrmlab matrix --kernel host $(foreach k,$(TEST_KERNELS),--kernel $(k)) $(MATRIX_FLAGS) \
		$(if $(filter 6.12,$(TEST_KERNELS)),--only '6.12=$(SECOND_KERNEL_TESTS)'); \
		status=$$?; Scripts/check-report.sh .build/matrix/latest || status=1; exit $$status

# Every test run is also judged on the host: its namespace (links, addresses, routes, rules,
# xfrm states and policies, watched sysctls, nft and legacy iptables) is saved before the whole
# run and compared after it, whatever the suites said; any difference fails `make test`.
# (The suites' exit status waits in a file so that the comparison runs whatever they said.)
HOST_SNAPSHOT := .build/host-before-test.snapshot
test: build-tests
	$(BIN)/xfrmlab host-snapshot save $(HOST_SNAPSHOT)
	$(MAKE) --no-print-directory test-host test-vm; echo $$? > .build/test-status
	$(BIN)/xfrmlab host-snapshot compare $(HOST_SNAPSHOT)
	@exit $$(cat .build/test-status)

matrix: build-tests
	@Scripts/install-vm-deps.sh $(KERNELS)
	$(BIN)/xfrmlab matrix $(foreach k,$(KERNELS),--kernel $(k)) $(MATRIX_FLAGS)

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

# Pictures of the default topologies for README.md, and the API reference: DocC over every library
# module, combined, as a static site in .build/docs (Docs/API.md is the one-page overview).
DOC_TARGETS := Netlink Namespaces Topology Xfrm Probes Lab Daemons Scenarios
docs: build
	$(BIN)/xfrmlab graph north-east-west -o Docs/north-east-west
	$(BIN)/xfrmlab graph client1-client2-server -o Docs/client1-client2-server
	$(SWIFT) package --disable-sandbox --allow-writing-to-directory .build/docs generate-documentation \
		--enable-experimental-combined-documentation $(foreach t,$(DOC_TARGETS),--target $(t)) \
		--transform-for-static-hosting --output-path .build/docs
	@echo "API reference: python3 -m http.server -d .build/docs 8000, then http://localhost:8000/documentation/"

clean:
	rm -rf .build
