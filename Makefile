# XfrmLab: `make run` and `make test` are all a newcomer needs (README.md).
SWIFT ?= swift
BIN := .build/debug
export PATH := $(PATH):/opt/swift/usr/bin:/usr/sbin:/sbin

.PHONY: deps build build-tests release run test test-host docs-check starter-check bench clean gc docs fuzz vm-deps test-vm matrix crash-drill mutants daemon-roots

# Kernels `make test` boots in VMs besides running the suite on the host, all pinned by the kernel
# catalogue (Fixtures/kernels/kernels.lock) and fetched into its cache (/var/lib/xfrmlab/kernels),
# so a run's outcome changes only when the lock does. Debian's 6.1 has ESP, VTI and xfrm
# interfaces, which this machine's kernel lacks, and runs the whole suite; the others run the
# tests whose verdict is a kernel's behaviour: the bug reports and every case of the mark
# scenarios (the scenario runs themselves, `xfrmlab run NAME`, repeat those cases: 6.1 runs them).
# 5.10 is there twice, the oldest pinned point release (5.10.218) and the newest (5.10 = 5.10.262).
TEST_KERNELS ?= 6.1 5.10.218 5.10 6.12 7.2
SECOND_KERNEL_TESTS ?= (BugReport|Scenario|MarkInheritance|OverlappingSubnets)[A-Za-z]*/(?!scenario(Run)?\()
# The daemons of two releases with each other (bookworm's from apt, trixie's from the roots of
# `make daemon-roots`) run on trixie's kernel, 6.12, and are left out of 6.1's whole suite.
DAEMON_VERSION_TESTS ?= Daemon(Version|OutputMark|RoadWarrior)Tests
DAEMON_VERSION_KERNEL ?= 6.12
# Kernels built here from Debian's pinned linux-source-6.1 (Fixtures/kernels/kernels.lock, `sources:`)
# with Fixtures/kernels/xfrmlab.config: the control, and the mutant that undoes the fixes of every
# report with a Fixtures/reports/ID/mutant-6.1.patch at once, but for those whose firing leaves the
# kernel broken for the tests after it: each of those is a kernel of its own that runs only its
# report. On a mutant each detector must say REPRODUCES, on the control FIXED; the report prints the
# score. Built once into the kernel cache's builds/ (the mutants reuse the control's build tree).
MUTANT_SERIES ?= 6.1
MUTANT_ALONE ?= xfrmi-netns-teardown migrate-direction
# Tests that run by themselves after the others on the shared mutant (none today; see
# Docs/Mutant-kernels.md for xfrmi-cross-netns-delete, whose mutant is left out).
MUTANT_LAST ?=
MUTANT_KERNELS = $(MUTANT_SERIES)-control $(MUTANT_SERIES)-mutant $(foreach id,$(MUTANT_ALONE),$(MUTANT_SERIES)-mutant-$(id))
# A report's test function is its ID in camel case (Tests/LabTests/BugReportTests.swift).
report_test = BugReportTests/$(shell echo '$(1)' | sed -E 's/-(.)/\U\1/g')\(
MUTANT_MATRIX_FLAGS = --only '$(MUTANT_SERIES)-control=BugReport' --only '$(MUTANT_SERIES)-mutant=BugReport' \
	$(foreach t,$(MUTANT_LAST),--alone '$(MUTANT_SERIES)-mutant=$(t)') \
	$(foreach id,$(MUTANT_ALONE),--only '$(MUTANT_SERIES)-mutant-$(id)=$(call report_test,$(id))')
# `make matrix KERNELS="host 6.1 6.12 /path/to/bzImage"`: any kernels, on demand (catalogue aliases:
# 5.10 6.1 6.12 7.2 7.3-rc, flavours such as 6.1-cloud, point releases such as 5.10.218; see
# `xfrmlab kernels list`).
KERNELS ?= host 6.1 6.12
# The 1,000-host test runs by itself, after the rest, as in test-host.
MATRIX_FLAGS ?= --alone LoadTests

deps:
	@Scripts/install-deps.sh

# qemu and virtme-ng (opt-in: only the VM targets need them); kernels come from the catalogue.
vm-deps:
	@Scripts/install-vm-deps.sh

build: deps
	$(SWIFT) build

build-tests: deps
	$(SWIFT) build --build-tests

# The command as users run it: optimised, with the Swift runtime linked in (no shared Swift
# libraries to load and bind at start-up), so a whole `xfrmlab up` is a few times faster than
# the iproute2 script doing the same (`make bench` measures both).
RELEASE_BIN := .build/release
release: deps
	$(SWIFT) build -c release --static-swift-stdlib --product xfrmlab

# The main job: north/east/west up, connectivity and fwmark routing proven, report, down.
run: release
	$(RELEASE_BIN)/xfrmlab run connectivity --topology north-east-west

# The root filesystems other daemon releases run from (trixie's strongSwan and libreswan), built
# once with mmdebstrap into /var/lib/xfrmlab/daemons (Scripts/install-daemon-roots.sh).
daemon-roots:
	@Scripts/install-daemon-roots.sh

# The whole suite on this machine's kernel: everything but the 1,000-host test, which runs
# alone afterwards (it holds the kernel's RTNL lock for seconds), then two suites at once.
test-host: build-tests daemon-roots
	$(SWIFT) test --skip-build --skip LoadTests
	$(SWIFT) test --skip-build --filter LoadTests
	Scripts/two-suites.sh

# The same suite on Debian's kernel in a VM (virtme-ng over qemu; TCG where nested KVM fails), with
# the host beside it, judged by Fixtures/matrix/expectations.yaml; the report lands in .build/matrix/latest/
# (report.txt, .json, junit.xml, and report.html, which headless Chromium then renders and checks).
test-vm: build-tests daemon-roots
	@Scripts/install-vm-deps.sh
	@Scripts/install-build-deps.sh
	$(BIN)/xfrmlab kernels fetch $(TEST_KERNELS)
	$(BIN)/xfrmlab kernels build $(MUTANT_KERNELS)
	$(BIN)/xfrmlab matrix --kernel host $(foreach k,$(TEST_KERNELS) $(MUTANT_KERNELS),--kernel $(k)) $(MATRIX_FLAGS) \
		$(foreach k,$(filter-out 6.1,$(TEST_KERNELS)),--only '$(k)=$(SECOND_KERNEL_TESTS)') \
		--only '$(DAEMON_VERSION_KERNEL)=$(DAEMON_VERSION_TESTS)' --except '6.1=$(DAEMON_VERSION_TESTS)' \
		$(MUTANT_MATRIX_FLAGS); \
		status=$$?; Scripts/check-report.sh .build/matrix/latest || status=1; exit $$status

# Every test run is also judged on the host: its namespace (links, addresses, routes, rules,
# xfrm states and policies, watched sysctls, nft and legacy iptables) is saved before the whole
# run and compared after it, whatever the suites said; any difference fails `make test`.
# (The suites' exit status waits in a file so that the comparison runs whatever they said.)
HOST_SNAPSHOT := .build/host-before-test.snapshot
# The VM tools and the kernels are fetched while the host suite runs (downloads, not CPU).
test: build-tests
	$(BIN)/xfrmlab host-snapshot save $(HOST_SNAPSHOT)
	{ Scripts/install-vm-deps.sh && Scripts/install-build-deps.sh && $(BIN)/xfrmlab kernels fetch $(TEST_KERNELS); } > .build/fetch.log 2>&1 & fetch=$$!; \
		$(MAKE) --no-print-directory test-host; status=$$?; \
		wait $$fetch || status=1; cat .build/fetch.log; \
		[ $$status = 0 ] && $(MAKE) --no-print-directory test-vm && $(MAKE) --no-print-directory docs-check \
			&& $(MAKE) --no-print-directory starter-check && $(MAKE) --no-print-directory crash-drill; \
		echo $$? > .build/test-status
	$(BIN)/xfrmlab host-snapshot compare $(HOST_SNAPSHOT)
	@exit $$(cat .build/test-status)

# The docs say what was run: Docs/Findings.md's tables are what the last matrix measured (so this
# follows test-vm, whose matrix it reads), every command in README.md and Docs/ parses, the
# cheap ones run, and the README's tour runs as one script.
docs-check: build-tests
	$(BIN)/xfrmlab findings --check
	$(BIN)/xfrmlab check-docs
	Scripts/check-tour.sh

# What `xfrmlab init` makes, as someone else's package: built outside the repository, its tests on
# this kernel and on Debian's 6.1 in a VM (`xfrmlab matrix --package`), its CI files linted.
starter-check: build-tests
	Scripts/check-starter.sh 6.1

matrix: build-tests
	@Scripts/install-vm-deps.sh
	$(BIN)/xfrmlab matrix $(foreach k,$(KERNELS),--kernel $(k)) $(MATRIX_FLAGS)

# A guest's kernel panics on purpose, and the matrix must keep the panic, run the test again in a
# fresh guest and say it recurred (Scripts/crash-drill.sh; 1.5 minutes under TCG; in `make test`).
crash-drill: build-tests
	@Scripts/install-vm-deps.sh
	$(BIN)/xfrmlab kernels fetch 6.1
	Scripts/crash-drill.sh 6.1

# The mutant and control kernels alone: built (or found in the cache), their bug reports run.
mutants: build-tests
	@Scripts/install-vm-deps.sh
	@Scripts/install-build-deps.sh
	$(BIN)/xfrmlab kernels build $(MUTANT_KERNELS)
	$(BIN)/xfrmlab matrix $(foreach k,$(MUTANT_KERNELS),--kernel $(k)) $(MUTANT_MATRIX_FLAGS)

bench: release
	$(RELEASE_BIN)/xfrmlab bench

# Remove what killed runs left behind (never a live run's namespaces).
gc: build
	$(BIN)/xfrmlab gc

# libFuzzer over the topology loader and the netlink parsers (FUZZ_SECONDS, default 120).
FUZZ_SECONDS ?= 120
fuzz: deps
	$(SWIFT) build --scratch-path .build-fuzz --sanitize fuzzer -Xswiftc -DFUZZING --product XfrmLabFuzz
	mkdir -p .build-fuzz/corpus
	.build-fuzz/debug/XfrmLabFuzz -max_total_time=$(FUZZ_SECONDS) -max_len=8192 .build-fuzz/corpus Fixtures/fuzz-seeds

# Pictures of the default topologies for Docs/Topologies.md, and the API reference: DocC over every library
# module, combined, as a static site in .build/docs (Docs/API.md is the one-page overview).
DOC_TARGETS := Netlink Namespaces Topology Xfrm Probes Lab Daemons Scenarios Kmsg Matrix Reports XfrmLabTesting
docs: build
	$(BIN)/xfrmlab graph north-east-west -o Docs/north-east-west
	$(BIN)/xfrmlab graph client1-client2-server -o Docs/client1-client2-server
	$(SWIFT) package --disable-sandbox --allow-writing-to-directory .build/docs generate-documentation \
		--enable-experimental-combined-documentation $(foreach t,$(DOC_TARGETS),--target $(t)) \
		--transform-for-static-hosting --output-path .build/docs
	@echo "API reference: python3 -m http.server -d .build/docs 8000, then http://localhost:8000/documentation/"

clean:
	rm -rf .build
