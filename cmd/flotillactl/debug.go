package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla-db/flotilla/storage"
	"github.com/spf13/cobra"
)

// identityFileName is the identity file of a data directory of a node
// started by "flotilla start" (node.IdentityFile); its store is in the
// subdirectory storeDirName.
const (
	identityFileName = "flotilla-node.json"
	storeDirName     = "store"
)

// identity is what flotillactl shows of an identity file.
type identity struct {
	NodeID       uint64 `json:"node_id"`
	Instance     uint64 `json:"instance"`
	ClusterID    uint64 `json:"cluster_id"`
	Bootstrapped bool   `json:"bootstrapped"`
}

// identityInfo is an identity file as read: its contents, or why they
// could not be read.
type identityInfo struct {
	path string
	raw  json.RawMessage // valid JSON, or nil
	id   identity
	err  error
}

// debugCommands are the commands that inspect a stopped node offline:
// "debug dump --data-dir DIR".
func debugCommands(e *env) []*cobra.Command {
	debug := asGroup(&cobra.Command{
		Use:   "debug",
		Short: "offline inspection of a stopped node: debug dump --data-dir DIR",
	})
	dump := &cobra.Command{
		Use:   "dump --data-dir DIR",
		Short: "dump a stopped node's store (offline)",
		Long: `Dump the store of a stopped node. DIR is a node's data directory (as given
to flotilla start: its identity file is printed, then DIR/store is dumped)
or a store directory. Per shard: range, HardState, applied and truncated
index, log, replicas.`,
		Args: argNames(),
		RunE: func(c *cobra.Command, _ []string) error {
			if e.dataDir == "" {
				return usageErrorf(c, "debug dump needs --data-dir (the data directory of a stopped node)")
			}
			return e.dump(e.dataDir)
		},
	}
	dump.Flags().StringVar(&e.dataDir, "data-dir", "", "the data directory (`DIR`) of a stopped node, or a store directory")
	debug.AddCommand(dump)
	return []*cobra.Command{debug}
}

// dump prints the identity file of the data directory dir, if it has one,
// and its store: dir/store if it exists, else dir itself.
func (e *env) dump(dir string) error {
	ident := readIdentity(filepath.Join(dir, identityFileName))
	storeDir := filepath.Join(dir, storeDirName)
	if st, err := os.Stat(storeDir); err != nil || !st.IsDir() {
		if ident != nil {
			return e.emitIdentityOnly(dir, ident)
		}
		storeDir = dir // dir is a store itself
	}
	s, err := storage.Open(storage.Config{Dir: storeDir, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("cannot open the store in %s (is it a Flotilla data directory, and is its node stopped?): %w", storeDir, err)
	}
	defer s.Close()
	sid, _, err := s.Ident()
	if err != nil {
		return fmt.Errorf("cannot read the identity of the store in %s: %w", storeDir, err)
	}
	shards, err := s.Dump()
	if err != nil {
		return fmt.Errorf("cannot read the shards of the store in %s: %w", storeDir, err)
	}
	tombs, err := s.Tombstones()
	if err != nil {
		return fmt.Errorf("cannot read the tombstones of the store in %s: %w", storeDir, err)
	}
	if e.output == "json" {
		doc := map[string]any{"cluster_id": sid.ClusterID, "node_id": sid.NodeID, "shards": shards, "tombstones": tombs}
		if ident != nil {
			doc["store_dir"] = storeDir
			ident.addTo(doc)
		}
		return e.emit(doc, nil)
	}
	return e.emit(nil, func(w io.Writer) {
		if ident != nil {
			ident.print(w)
			fmt.Fprintf(w, "store %s:\n", storeDir)
		}
		fmt.Fprintf(w, "cluster %d, node %d, %d shards, %d tombstones %v\n", sid.ClusterID, sid.NodeID, len(shards), len(tombs), tombs)
		dumpTable(w, shards)
	})
}

// emitIdentityOnly prints the identity of a data directory without store.
func (e *env) emitIdentityOnly(dir string, ident *identityInfo) error {
	note := fmt.Sprintf("no store yet: %s does not exist", filepath.Join(dir, storeDirName))
	if e.output == "json" {
		doc := map[string]any{"store_dir": nil, "note": note}
		ident.addTo(doc)
		return e.emit(doc, nil)
	}
	return e.emit(nil, func(w io.Writer) {
		ident.print(w)
		fmt.Fprintln(w, note)
	})
}

func dumpTable(w io.Writer, shards []storage.ShardDump) {
	fmt.Fprintln(w, "SHARD\tREPLICA\tRANGE\tTERM\tVOTE\tCOMMIT\tAPPLIED\tTRUNCATED\tLOG\tREPLICAS (node/replica role)\tNEXT ID")
	for _, d := range shards {
		rng := "(uninitialized)"
		if d.Initialized {
			rng = fmt.Sprintf("%016x-%016x g%d", d.Desc.Start, d.Desc.Last, d.Desc.Generation)
		}
		log := "empty"
		if d.LastIndex >= d.FirstIndex {
			log = fmt.Sprintf("%d..%d", d.FirstIndex, d.LastIndex)
		}
		var reps []string
		for _, r := range d.Desc.Replicas {
			reps = append(reps, fmt.Sprintf("%d/%d %s", r.NodeID, r.ReplicaID, r.Role))
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%d\t%d\t%d@%d\t%d@%d\t%s\t%s\t%d\n", shardName(d.ShardID), d.ReplicaID, rng,
			d.HardState.Term, d.HardState.Vote, d.HardState.Commit, d.Applied, d.AppliedTerm,
			d.TruncatedIndex, d.TruncatedTerm, log, strings.Join(reps, ", "), d.Desc.NextReplicaID)
	}
}

// readIdentity reads the identity file at path; nil if there is none.
func readIdentity(path string) *identityInfo {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	info := &identityInfo{path: path, err: err}
	if err == nil {
		if err := json.Unmarshal(b, &info.id); err != nil {
			info.err = fmt.Errorf("damaged: %w", err)
		} else {
			info.raw = json.RawMessage(b)
		}
	}
	return info
}

// addTo adds the identity file to a JSON document.
func (i *identityInfo) addTo(doc map[string]any) {
	doc["identity_file"] = i.path
	if i.err != nil {
		doc["identity_error"] = i.err.Error()
		return
	}
	doc["identity"] = i.raw
}

// print writes the identity file's line of the table output.
func (i *identityInfo) print(w io.Writer) {
	if i.err != nil {
		fmt.Fprintf(w, "identity %s: cannot read it: %v\n", i.path, i.err)
		return
	}
	cluster := "none yet (not bootstrapped or joined)"
	if i.id.ClusterID != 0 {
		cluster = fmt.Sprintf("%016x (%d)", i.id.ClusterID, i.id.ClusterID)
	}
	boot := ""
	if i.id.Bootstrapped {
		boot = ", bootstrap member"
	}
	fmt.Fprintf(w, "identity %s: node %d, cluster %s, instance %d%s\n", i.path, i.id.NodeID, cluster, i.id.Instance, boot)
}
