#!/bin/bash
# Runs in the guest (guest.sh): the tests that need the guest kernel's
# modules (ipip, wireguard), from test binaries built on the host into
# build/guest. With TABBY_GUEST=1 a test that would skip for a missing
# module fails instead, and the labs' deadlines stretch for emulation.
set -u
root=$(cd "$(dirname "$0")/../../.." && pwd)
export TABBY_GUEST=1 TABBY_DOCKER_MAJOR=20
rc=0
run() { # DIR BINARY PATTERN
	[ -z "$3" ] && return
	(cd "$root/$1" && "$root/build/guest/$2" -test.count=1 -test.v -test.timeout 40m -test.run "$3") || rc=1
}
run driver/dataplane dataplane.test "${TABBY_GUEST_UNIT-^(TestIPIP.*|TestWireGuard.*)$}"
run plugin/e2e e2e.test "${TABBY_GUEST_E2E-^(TestIPIP.*|TestWireGuard.*)$}"
run plugin/e2e e2e.test "${TABBY_GUEST_EXAMPLES-^TestExampleLabs$/^seed000}"
# Figures from the guest are ratios (emulation distorts the rest).
if [ -n "${TABBY_GUEST_BENCH-^BenchmarkWireGuard$}" ]; then
	(cd "$root/plugin/e2e" && "$root/build/guest/e2e.test" -test.run '^$' -test.bench "${TABBY_GUEST_BENCH-^BenchmarkWireGuard$}" -test.benchtime 1x -test.timeout 20m) || rc=1
fi
exit $rc
