// Package nodepb holds the wire types and the gRPC service (KV) that a
// Flotilla node serves to applications, generated from node.proto by
// genproto.sh. The server is in package node (client_*.go), the Go client in
// package client. The generated files are checked in; edit the .proto and
// regenerate, never the .pb.go files.
package nodepb
