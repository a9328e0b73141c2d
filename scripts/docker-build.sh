#!/usr/bin/env bash
# Builds the static binaries into ./dist and the flotilla:dev image FROM
# scratch around them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o dist/flotilla ./cmd/flotilla
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o dist/flotillactl ./cmd/flotillactl
docker build -t flotilla:dev .
