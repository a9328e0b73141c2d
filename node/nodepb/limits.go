package nodepb

import "google.golang.org/grpc"

// MaxResponseBytes is the largest answer a client of the Admin and KV
// services takes (gRPC's default, 4 MiB, is too small for an Admin
// LocalShards of a node with 100,000 replicas: 10 MiB). Every client of
// these services in this repository dials with CallOptions.
const MaxResponseBytes = 256 << 20

// CallOptions are the default call options of a connection to a node's
// client address.
func CallOptions() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes))
}
