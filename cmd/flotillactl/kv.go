package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/flotilla-db/flotilla/client"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// withClient runs fn with a client of the cluster, within --timeout.
func (e *env) withClient(fn func(context.Context, *client.Client) error) error {
	ctx, cancel := e.context()
	defer cancel()
	if err := checkReachable(ctx, e); err != nil {
		return err
	}
	eps := e.endpointList()
	c, err := client.New(ctx, client.Config{
		Endpoints:   eps,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
	})
	if err != nil {
		return fmt.Errorf("cannot get the routes from %s: %w", strings.Join(eps, ", "), err)
	}
	defer c.Close()
	return fn(ctx, c)
}

// kvCommands are the commands that read and write keys, through the client
// package (routed to the keys' leaders).
func kvCommands(e *env) []*cobra.Command {
	get := &cobra.Command{
		Use:   "get KEY [--stale | --replica | --lease | --read-index]",
		Short: "read a key",
		Long: `Read KEY from its shard's leader, as the leader's node is configured
(flotilla start --read-mode); with --lease, from the leader's lease (no
quorum round; refused by a node not in lease mode); with --read-index,
confirmed by a quorum round whatever the mode; with --replica, linearizably
from a replica picked at random (a follower gets the read index from the
leader); with --stale, from any replica as it is (possibly stale).`,
		Args: argNames("KEY"),
	}
	get.Flags().BoolVar(&e.stale, "stale", false, "read any replica (possibly stale), not the leader")
	replica := get.Flags().Bool("replica", false, "read linearizably on a random replica, leader or follower")
	lease := get.Flags().Bool("lease", false, "read on the leader from its lease (the node must run --read-mode lease)")
	readIndex := get.Flags().Bool("read-index", false, "read on the leader with a quorum round (ReadIndex), even in lease mode")
	get.RunE = func(c *cobra.Command, pos []string) error {
		var opts []client.ReadOption
		for _, o := range []struct {
			set bool
			opt client.ReadOption
		}{{e.stale, client.Stale}, {*replica, client.Replica}, {*lease, client.Lease}, {*readIndex, client.ReadIndex}} {
			if o.set {
				opts = append(opts, o.opt)
			}
		}
		if len(opts) > 1 {
			return usageErrorf(c, "%s: --stale, --replica, --lease and --read-index exclude each other", cmdPath(c))
		}
		return e.get(c, pos, opts...)
	}
	return []*cobra.Command{
		{
			Use:   "put KEY VALUE",
			Short: "set a key",
			Args:  argNames("KEY", "VALUE"),
			RunE:  e.put,
		},
		get,
		{
			Use:   "del KEY",
			Short: "delete a key",
			Args:  argNames("KEY"),
			RunE:  e.del,
		},
	}
}

func (e *env) put(_ *cobra.Command, pos []string) error {
	return e.withClient(func(ctx context.Context, cl *client.Client) error {
		if err := cl.Put(ctx, []byte(pos[0]), []byte(pos[1])); err != nil {
			return err
		}
		return e.emitText(map[string]any{"key": pos[0], "ok": true}, "OK")
	})
}

func (e *env) get(_ *cobra.Command, pos []string, opts ...client.ReadOption) error {
	return e.withClient(func(ctx context.Context, cl *client.Client) error {
		v, found, err := cl.Get(ctx, []byte(pos[0]), opts...)
		if err != nil {
			return err
		}
		if !found {
			return e.emitText(map[string]any{"key": pos[0], "found": false}, "(not found)")
		}
		return e.emitText(map[string]any{"key": pos[0], "found": true, "value": string(v)}, string(v))
	})
}

func (e *env) del(_ *cobra.Command, pos []string) error {
	return e.withClient(func(ctx context.Context, cl *client.Client) error {
		existed, err := cl.Delete(ctx, []byte(pos[0]))
		if err != nil {
			return err
		}
		table := "OK"
		if !existed {
			table = "OK (key did not exist)"
		}
		return e.emitText(map[string]any{"key": pos[0], "existed": existed}, table)
	})
}
