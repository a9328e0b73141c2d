#!/usr/bin/env bash
# The project's test command (the README's second command): every package
# with the race detector, then the engine's cluster tests again over the gRPC
# transport on loopback. Well under 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
go mod download
go test -race -count=1 -timeout 20m ./...
go test -race -count=1 -timeout 20m ./engine/ \
  -run 'TestLinearizability|TestCrashSafety|TestThousandShards|TestRestartReappliesNothing|TestMembershipSnapshotTransfer|TestQuiescence|TestBasicPutGet|TestFailoverWithinElectionTimeout' \
  -args -grpc
# The 100 MB snapshot's memory bound, measured without the race detector.
go test -count=1 -timeout 10m ./engine/ -run TestBigSnapshotOverGRPC
# 100,000 shard records in the meta shard (10,000 under the race detector).
go test -count=1 -timeout 10m ./node/meta/ -run TestScale
