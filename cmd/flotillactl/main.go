// Command flotillactl is Flotilla's admin and client tool.
//
//	flotillactl [--endpoints ADDR,...] [--output table|json] put KEY VALUE
//	flotillactl ... get KEY [--stale]
//	flotillactl ... del KEY
//	flotillactl ... shards
//	flotillactl debug dump --data-dir DIR   (offline: a stopped node's store)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/storage"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "flotillactl: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("flotillactl", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", "client addresses of cluster nodes")
	output := fs.String("output", "table", "output format: table or json")
	timeout := fs.Duration("timeout", 10*time.Second, "time allowed for the command")
	stale := fs.Bool("stale", false, "get: read the local replica (possibly stale)")
	dataDir := fs.String("data-dir", "", "debug dump: the data directory of a stopped node")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: flotillactl [flags] put KEY VALUE | get KEY | del KEY | shards | debug dump --data-dir DIR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("--output must be table or json, not %q", *output)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errors.New("no command given")
	}
	if rest[0] == "debug" {
		return debug(rest[1:], *dataDir, *output)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: strings.Split(*endpoints, ",")})
	if err != nil {
		return fmt.Errorf("cannot reach the cluster at %s: %w", *endpoints, err)
	}
	defer c.Close()
	emit := func(v map[string]any, table string) {
		if *output == "json" {
			b, _ := json.Marshal(v)
			fmt.Println(string(b))
		} else {
			fmt.Println(table)
		}
	}
	switch cmd := rest[0]; cmd {
	case "put":
		if len(rest) != 3 {
			return errors.New("usage: put KEY VALUE")
		}
		if err := c.Put(ctx, []byte(rest[1]), []byte(rest[2])); err != nil {
			return err
		}
		emit(map[string]any{"key": rest[1], "ok": true}, "OK")
	case "get":
		if len(rest) != 2 {
			return errors.New("usage: get KEY")
		}
		var opts []client.ReadOption
		if *stale {
			opts = append(opts, client.Stale)
		}
		v, found, err := c.Get(ctx, []byte(rest[1]), opts...)
		if err != nil {
			return err
		}
		if !found {
			emit(map[string]any{"key": rest[1], "found": false}, "(not found)")
			return nil
		}
		emit(map[string]any{"key": rest[1], "found": true, "value": string(v)}, string(v))
	case "del":
		if len(rest) != 2 {
			return errors.New("usage: del KEY")
		}
		existed, err := c.Delete(ctx, []byte(rest[1]))
		if err != nil {
			return err
		}
		table := "OK"
		if !existed {
			table = "OK (key did not exist)"
		}
		emit(map[string]any{"key": rest[1], "existed": existed}, table)
	case "shards":
		shards := c.Shards()
		if *output == "json" {
			b, _ := json.Marshal(map[string]any{"generation": c.Generation(), "shards": shards})
			fmt.Println(string(b))
			return nil
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "generation %d, %d shards\n", c.Generation(), len(shards))
		fmt.Fprintln(w, "SHARD")
		for _, s := range shards {
			fmt.Fprintf(w, "%d\n", s)
		}
		return w.Flush()
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

// debug runs the offline inspection commands on a node's store.
func debug(args []string, dataDir, output string) error {
	if len(args) == 0 || args[0] != "dump" {
		return errors.New("usage: flotillactl debug dump --data-dir DIR")
	}
	fs := flag.NewFlagSet("debug dump", flag.ContinueOnError)
	fs.StringVar(&dataDir, "data-dir", dataDir, "the data directory of a stopped node")
	fs.StringVar(&output, "output", output, "output format: table or json")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if dataDir == "" {
		return errors.New("debug dump needs --data-dir (the data directory of a stopped node)")
	}
	s, err := storage.Open(storage.Config{Dir: dataDir, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("cannot open the store in %s (is it a Flotilla data directory, and is its node stopped?): %w", dataDir, err)
	}
	defer s.Close()
	ident, _, err := s.Ident()
	if err != nil {
		return err
	}
	dump, err := s.Dump()
	if err != nil {
		return err
	}
	tombs, err := s.Tombstones()
	if err != nil {
		return err
	}
	if output == "json" {
		b, _ := json.MarshalIndent(map[string]any{"cluster_id": ident.ClusterID, "node_id": ident.NodeID, "shards": dump, "tombstones": tombs}, "", "  ")
		fmt.Println(string(b))
		return nil
	}
	fmt.Printf("cluster %d, node %d, %d shards, %d tombstones %v\n", ident.ClusterID, ident.NodeID, len(dump), len(tombs), tombs)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SHARD\tRANGE\tTERM\tVOTE\tCOMMIT\tAPPLIED\tTRUNCATED\tLOG\tVOTERS\tLEARNERS\tOUTGOING")
	for _, d := range dump {
		rng := "(uninitialized)"
		if d.Initialized {
			rng = fmt.Sprintf("%016x-%016x g%d", d.Desc.Start, d.Desc.Last, d.Desc.Generation)
		}
		log := "empty"
		if d.LastIndex >= d.FirstIndex {
			log = fmt.Sprintf("%d..%d", d.FirstIndex, d.LastIndex)
		}
		fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%d\t%d@%d\t%d@%d\t%s\t%v\t%v\t%v\n", d.ShardID, rng,
			d.HardState.Term, d.HardState.Vote, d.HardState.Commit, d.Applied, d.AppliedTerm,
			d.TruncatedIndex, d.TruncatedTerm, log, d.ConfState.Voters, d.ConfState.Learners, d.ConfState.VotersOutgoing)
	}
	return w.Flush()
}
