// Package transportpb holds the wire types and the gRPC service of package
// transport, generated from transport.proto by ../genproto.sh. The generated
// files are checked in; edit the .proto and regenerate, never the .pb.go files.
package transportpb
