package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/flotilla-db/flotilla/client"
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

func cmdPut(e *env, c *command, args []string) error {
	pos, err := e.parse(c, e.flags(c), args, "KEY", "VALUE")
	if err != nil {
		return err
	}
	return e.withClient(func(ctx context.Context, cl *client.Client) error {
		if err := cl.Put(ctx, []byte(pos[0]), []byte(pos[1])); err != nil {
			return err
		}
		return e.emitText(map[string]any{"key": pos[0], "ok": true}, "OK")
	})
}

func cmdGet(e *env, c *command, args []string) error {
	fs := e.flags(c)
	fs.BoolVar(&e.stale, "stale", e.stale, "read any replica (possibly stale), not the leader")
	pos, err := e.parse(c, fs, args, "KEY")
	if err != nil {
		return err
	}
	var opts []client.ReadOption
	if e.stale {
		opts = append(opts, client.Stale)
	}
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

func cmdDel(e *env, c *command, args []string) error {
	pos, err := e.parse(c, e.flags(c), args, "KEY")
	if err != nil {
		return err
	}
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
