#!/usr/bin/env bash
# The project's test command (the README's second command): every package
# with the race detector, then the engine's cluster tests again over the gRPC
# transport on loopback. Well under 20 minutes on 2 cores.
#
# go test prints a failing test's lines amid thousands of log lines; on a
# failure this script prints them again at its end (the failing tests, their
# file:line messages, panics and races), where a reader of the last lines of
# CI's output finds them.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
  if ! "$@" 2>&1 | tee -a "$log"; then
    echo
    echo "== failed: $*"
    grep -E -e '--- FAIL|^[[:space:]]+[A-Za-z0-9_]+_test\.go:[0-9]+:|^panic:|WARNING: DATA RACE|^FAIL|test timed out' "$log" | tail -n 80 || true
    exit 1
  fi
}
go mod download
run go test -race -count=1 -timeout 20m ./...
run go test -race -count=1 -timeout 20m ./engine/ \
  -run 'TestLinearizability|TestCrashSafety|TestThousandShards|TestRestartReappliesNothing|TestMembershipSnapshotTransfer|TestQuiescence|TestBasicPutGet|TestFailoverWithinElectionTimeout' \
  -args -grpc
# The 100 MB snapshot's memory bound, measured without the race detector.
run go test -count=1 -timeout 10m ./engine/ -run TestBigSnapshotOverGRPC
# 100,000 shard records in the meta shard (10,000 under the race detector).
run go test -count=1 -timeout 10m ./node/meta/ -run TestScale
