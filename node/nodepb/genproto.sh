#!/bin/sh
# Regenerates node/nodepb from node.proto. Needs protoc
# (apt-get install protobuf-compiler); installs the Go plugins at the versions
# the checked-in code was generated with. Run from anywhere.
set -eu
cd "$(dirname "$0")"
GOBIN="${GOBIN:-$(go env GOPATH)/bin}"
export PATH="$GOBIN:$PATH"
GOFLAGS= go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOFLAGS= go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
protoc --proto_path=. \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	node.proto
