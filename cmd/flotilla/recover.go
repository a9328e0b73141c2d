package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/recovery"
)

// recoverInfo prints what a stopped node's data directory holds, as the
// JSON the other survivors' --recover-peers read.
func recoverInfo(args []string) error {
	fs := flag.NewFlagSet("recover-info", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "data directory of the stopped node (required)")
	fs.Parse(args)
	if *dataDir == "" || fs.NArg() > 0 {
		return errors.New("recover-info: --data-dir is required, and nothing else")
	}
	info, err := node.RecoverInfo(*dataDir)
	if err != nil {
		return fmt.Errorf("recover-info: %w", err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(info)
}

// forceNewCluster reads the other survivors' files and returns the
// recovery of `start --force-new-cluster`, which prints its report.
func forceNewCluster(force bool, peerFiles []string) (*node.ForceNewCluster, error) {
	fc := &node.ForceNewCluster{Force: force, OnReport: printRecovery}
	for _, f := range peerFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--recover-peers: %w", err)
		}
		var info recovery.Info
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, fmt.Errorf("--recover-peers: %s: %w", f, err)
		}
		fc.Peers = append(fc.Peers, info)
	}
	return fc, nil
}

func printRecovery(rep recovery.Report) {
	fmt.Printf("force-new-cluster: node %d recovered %d replica(s):\n", rep.NodeID, len(rep.Shards))
	for _, sr := range rep.Shards {
		fmt.Printf("  %s\n", sr)
	}
	fmt.Printf("force-new-cluster: nodes %v are no longer part of the cluster (marked removed once the meta shard elects); do not restart them with their old data directories.\n", rep.Gone)
	fmt.Println("force-new-cluster: WARNING: writes acknowledged after a kept replica's last index may be lost.")
}
