# tabby: `make` builds bin/tabby; `make test` runs every test tier (unit,
# real etcd, real kernel namespaces, real dockerd); `make bench` measures.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/tabbynet/tabby/plugin.Version=$(VERSION)
PKGS    := ./...
DEB     := docker.io etcd-server busybox-static iproute2 iptables gobgpd iperf3 nftables docker-registry tcpdump
export CGO_ENABLED ?= 0

# Docker Engine 29 (dockerd, docker-proxy, runc), built once from the Go
# module proxy; the e2e suite runs against it and against Debian's 20.10.
DOCKER29 ?= /var/cache/tabby/docker29
# Docker Compose v2, built once from the Go module proxy (the Compose tests).
COMPOSE ?= /var/cache/tabby/compose

.PHONY: all build run deps docker29 compose test test-kernel unit e2e e2e-20 e2e-29 bench fuzz plugin demo reliability-report security-report clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tabby ./plugin/cmd/tabby

# Start tabby against the local Docker with the embedded etcd.
run: build
	./bin/tabby daemon

# Install what the tests need from Debian (skipped when already there).
deps:
	@missing=""; for b in dockerd etcd busybox ip iptables gobgpd iperf3 nft docker-registry tcpdump; do command -v $$b >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB); \
	fi

docker29:
	./plugin/e2e/lab/docker29.sh $(DOCKER29)

compose:
	./plugin/e2e/lab/compose.sh $(COMPOSE)

# -race needs cgo. Everything, e2e included, runs on Debian's dockerd 20.10;
# then the e2e suite again on Docker Engine 29. The fuzz targets' checked-in
# corpora run as tests here; `make fuzz` explores further for a bounded time.
test: deps build docker29 compose
	TABBY_COMPOSE=$(COMPOSE)/docker-compose TABBY_DOCKER_MAJOR=20 CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m $(PKGS)
	$(MAKE) e2e-29 E2EFLAGS=
	$(MAKE) test-kernel
	$(MAKE) fuzz FUZZTIME=10s

# The tests that need kernel modules this machine lacks (ipip, wireguard),
# in a QEMU guest running Debian's own kernel on this machine's root
# filesystem (plugin/e2e/lab/guest.sh); the kernel package is cached here.
GUEST ?= /var/cache/tabby/guest
test-kernel: deps build
	mkdir -p build/guest
	$(GO) test -c -o build/guest/e2e.test ./plugin/e2e/
	$(GO) test -c -o build/guest/dataplane.test ./driver/dataplane/
	./plugin/e2e/lab/guest.sh $(GUEST) plugin/e2e/lab/guest-tests.sh

FUZZTIME ?= 30s
# Each fuzz target with its package.
FUZZ = FuzzPluginAPI:./plugin/ FuzzResourceYAML:./plugin/cli/ FuzzSelector:./driver/policy/
fuzz:
	for fp in $(FUZZ); do f=$${fp%%:*}; p=$${fp#*:}; \
		$(GO) test -count=1 -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
	done

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(shell $(GO) list ./... | grep -v /e2e)

E2EFLAGS ?= -v

# The end-to-end suite on both Docker versions, or on one (e2e-20, e2e-29).
e2e: e2e-20 e2e-29

e2e-20: deps build compose
	TABBY_COMPOSE=$(COMPOSE)/docker-compose TABBY_DOCKER_MAJOR=20 CGO_ENABLED=1 $(GO) test -count=1 -timeout 40m $(E2EFLAGS) ./plugin/e2e/

e2e-29: deps build docker29 compose
	TABBY_COMPOSE=$(COMPOSE)/docker-compose TABBY_DOCKERD=$(DOCKER29)/dockerd TABBY_DOCKER_MAJOR=29 CGO_ENABLED=1 $(GO) test -count=1 -timeout 40m $(E2EFLAGS) ./plugin/e2e/

# Every benchmark on Docker 20.10, then the comparison with Docker's own
# networks (BenchmarkVersusDocker) again on Engine 29.
bench: deps build docker29
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./plugin/e2e/ ./ipamdriver/ ./driver/policy/
	TABBY_DOCKERD=$(DOCKER29)/dockerd TABBY_DOCKER_MAJOR=29 $(GO) test -run '^$$' -bench '^BenchmarkVersusDocker$$' -benchtime 1x -timeout 30m ./plugin/e2e/

# The managed plugin: config.json + a rootfs with bin/tabby, iptables and
# nft, created in the Docker at $$DOCKER_HOST as $(PLUGIN) (for a registry:
# make plugin PLUGIN=registry.example:5000/tabby:1.0, then docker plugin push).
PLUGIN ?= tabby:latest
plugin: build
	PLUGIN=$(PLUGIN) ./plugin/managed/make-plugin.sh bin/tabby config.json build/plugin

# Runs the fault tests and the fuzzers (10 s each) and prints what each
# checked, its figure, and the verdict.
reliability-report: deps build
	@CGO_ENABLED=1 $(GO) test -count=1 -timeout 30m -run 'TestReliability|TestEtcdMutualTLS' -v ./plugin/e2e/ ./datastore/ > reliability.log 2>&1; rc=$$?; \
	for fp in $(FUZZ); do f=$${fp%%:*}; p=$${fp#*:}; \
		if $(GO) test -count=1 -run '^$$' -fuzz "^$$f$$" -fuzztime 10s $$p > fuzz-$$f.log 2>&1; then r=pass; else r=FAIL; rc=1; fi; \
		n=$$(grep -o 'execs: [0-9]*' fuzz-$$f.log | tail -1 | cut -d' ' -f2); \
		printf 'REPORT\tbad input (fuzz)\t%s: no panic, rejections are errors, nothing left behind\t%s inputs in 10 s\t%s\n' $$f "$$n" $$r >> reliability.log; \
		cat fuzz-$$f.log >> reliability.log; rm -f fuzz-$$f.log; \
	done; \
	printf '%-24s  %-66s  %-40s  %s\n' FAULT CHECK FIGURE RESULT; \
	grep -o 'REPORT.*' reliability.log | awk -F'\t' '{ f=$$4; if (length(f) > 40) f=substr(f,1,37) "..."; printf "%-24s  %-66s  %-40s  %s\n", $$2, $$3, f, $$5 }'; \
	echo "(full output: reliability.log)"; exit $$rc

# Runs the tests that attack tabby (datastore access, DNS, container to
# host, flushed rules, BGP passwords, policy input, secrets, IPAM) and prints
# each attack, what was tried, the figure and the verdict.
SECURITY_TESTS := TestReliabilitySecurity|TestSecurityHostileBGPPeer|TestEmbeddedEtcd|TestDNSAcrossHosts|TestContainersAndTheirHost|TestReliabilityRulesFlushed|TestReliabilityRoutesFlushed|TestBGPPeerPasswordIsNeverPrinted|TestSelectorTextStaysOutOfTheRuleset|TestReleaseAddressFreesDockersAddressesOnly|TestReleaseInDisabledPool|TestPoolGeometryIsFixedWhileBlocksExist|TestPolicyOnRealSpeakers|TestHostileAnnouncementsAreRefused|TestOverlappingPoolsAtOnce|TestValidateFilterNamesTheBadField|TestSecurityBadRecords|TestNodesAnnounceOnlyWhatIPAMGivesThem|TestExportFilterOnRealSpeakers|TestOwnersCheckWhatTheyRead|TestBadRecordsAreSkippedNotBlocking|TestLateReleaseKeepsTheNewHoldersAddress|TestApplyBGPFilterRefusesWhatItCannotDo
security-report: deps build
	@CGO_ENABLED=1 $(GO) test -count=1 -timeout 30m -run '$(SECURITY_TESTS)' -v ./plugin/e2e/ ./plugin/ ./plugin/cli/ ./driver/policy/ ./ipamdriver/ ./bgp/ ./datastore/ > security.log 2>&1; rc=$$?; \
	printf '%-18s  %-72s  %-40s  %s\n' ATTACK TRIED FIGURE RESULT; \
	grep -o 'REPORT.*' security.log | awk -F'\t' '{ f=$$4; if (length(f) > 40) f=substr(f,1,37) "..."; printf "%-18s  %-72s  %-40s  %s\n", $$2, $$3, f, $$5 }'; \
	echo "(full output: security.log)"; exit $$rc

# Seed 001's three-host lab on this machine (as root); see examples/.
demo: deps build
	./examples/seed001-three-hosts.sh

clean:
	rm -rf bin build reliability.log security.log
