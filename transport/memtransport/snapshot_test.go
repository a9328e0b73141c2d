package memtransport

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-db/flotilla/engine"
)

var (
	errBody  = errors.New("test: body failed")
	errStage = errors.New("test: staging failed")
)

// chunkBody produces n chunks of size bytes; chunk k starts with k and is
// filled with byte(k). It reuses one buffer, so a transport that does not
// copy chunks corrupts them.
type chunkBody struct {
	n, size  int
	failAt   int // Next fails at this chunk if > 0
	produced atomic.Int64
	buf      []byte
	onNext   func(produced int64) // called after each chunk is produced
}

func (b *chunkBody) Next() ([]byte, error) {
	k := int(b.produced.Load())
	if k == b.n {
		return nil, io.EOF
	}
	if b.failAt > 0 && k == b.failAt {
		return nil, errBody
	}
	if b.buf == nil {
		b.buf = make([]byte, b.size)
	}
	for i := range b.buf {
		b.buf[i] = byte(k)
	}
	binary.BigEndian.PutUint32(b.buf, uint32(k))
	p := b.produced.Add(1)
	if b.onNext != nil {
		b.onNext(p)
	}
	return b.buf, nil
}

// checkChunk reports whether c is chunk k of a chunkBody of chunk size size.
func checkChunk(c []byte, k, size int) bool {
	if len(c) != size || binary.BigEndian.Uint32(c) != uint32(k) {
		return false
	}
	for _, x := range c[4:] {
		if x != byte(k) {
			return false
		}
	}
	return true
}

func snapHeader(to uint64) engine.SnapshotHeader {
	return engine.SnapshotHeader{To: to, ShardID: 7, Msg: raftpb.Message{
		Type: raftpb.MsgSnap, To: to, Snapshot: &raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 100, Term: 2}},
	}}
}

// readChunks is a HandleSnapshot that checks every chunk and counts them in
// consumed; after (if > 0) is called with the count after each chunk.
func readChunks(t *testing.T, size int, consumed *atomic.Int64, after func(n int64)) func(context.Context, engine.SnapshotHeader, engine.SnapshotBody) error {
	return func(_ context.Context, _ engine.SnapshotHeader, body engine.SnapshotBody) error {
		for {
			c, err := body.Next()
			if err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			k := int(consumed.Load())
			if !checkChunk(c, k, size) {
				t.Errorf("chunk %d corrupted", k)
			}
			n := consumed.Add(1)
			if after != nil {
				after(n)
			}
		}
	}
}

// Many chunks go through a buffer of a few: the sender never runs more than
// SnapshotBuffer+2 chunks ahead of the receiver, and stalls while the
// receiver does.
func TestSnapshotStreaming(t *testing.T) {
	cfg := DefaultConfig()
	c := newCluster(t, cfg, 1, 2)
	const n, size = 300, 1024
	bound := int64(cfg.SnapshotBuffer + 2)
	var consumed atomic.Int64
	var stalled atomic.Bool
	stalled.Store(true)
	body := &chunkBody{n: n, size: size}
	body.onNext = func(p int64) {
		if ahead := p - consumed.Load(); ahead > bound {
			t.Errorf("sender %d chunks ahead of the receiver, bound %d", ahead, bound)
		}
		if stalled.Load() && p > bound {
			t.Errorf("sender produced %d chunks while the receiver held the first", p)
		}
	}
	g := newGate()
	c.h[2].onSnapshot = readChunks(t, size, &consumed, func(n int64) {
		if n == 1 {
			g.wait()
		}
	})
	errc := make(chan error, 1)
	go func() { errc <- c.ep[1].SendSnapshot(context.Background(), snapHeader(2), body) }()
	<-g.entered
	waitUntil(t, "sender stalled on flow control", func() bool { return body.produced.Load() == bound })
	stalled.Store(false)
	g.open()
	if err := <-errc; err != nil {
		t.Fatalf("SendSnapshot: %v", err)
	}
	if consumed.Load() != n {
		t.Fatalf("receiver got %d chunks, want %d", consumed.Load(), n)
	}
	c.h[2].mu.Lock()
	hs := c.h[2].mu.snapshots
	c.h[2].mu.Unlock()
	if len(hs) != 1 || hs[0].ClusterID != DefaultClusterID || hs[0].From != 1 || hs[0].To != 2 ||
		hs[0].ShardID != 7 || hs[0].Msg.Snapshot.Metadata.Index != 100 {
		t.Fatalf("receiver got headers %+v", hs)
	}
}

// The rate limit is shared: two streams of 32 KiB at 1 MiB/s take as long as
// one of 64 KiB.
func TestSnapshotRateLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SnapshotRate = 1 << 20
	c := newCluster(t, cfg, 1, 2, 3)
	start := time.Now()
	errc := make(chan error, 2)
	for _, to := range []uint64{2, 3} {
		go func() {
			errc <- c.ep[1].SendSnapshot(context.Background(), snapHeader(to), &chunkBody{n: 32, size: 1024})
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 55*time.Millisecond {
		t.Fatalf("2 x 32 KiB at 1 MiB/s took %v", d)
	}
}

func TestSnapshotFailures(t *testing.T) {
	const n, size = 50, 256
	for _, tc := range []struct {
		name string
		// setup prepares the cluster and returns the ctx to send with; it
		// may set the receiver's handler and the body.
		setup func(t *testing.T, c *cluster, body *chunkBody) context.Context
		want  error
		// called reports whether the handler must have been called.
		called bool
	}{{
		name: "cut before start (reverse direction)",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			c.net.Cut(2, 1)
			return context.Background()
		},
		want: ErrLinkCut,
	}, {
		name: "partition midway",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			var consumed atomic.Int64
			c.h[2].onSnapshot = readChunks(t, size, &consumed, func(n int64) {
				if n == 3 {
					c.net.Partition([]uint64{1}, []uint64{2})
				}
			})
			return context.Background()
		},
		want: ErrLinkCut, called: true,
	}, {
		name: "body fails midway",
		setup: func(t *testing.T, c *cluster, body *chunkBody) context.Context {
			body.failAt = 5
			return context.Background()
		},
		want: errBody, called: true,
	}, {
		name: "handler fails",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			var consumed atomic.Int64
			read := readChunks(t, size, &consumed, nil)
			c.h[2].onSnapshot = func(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error {
				if err := read(ctx, h, body); err != nil {
					return err
				}
				return errStage
			}
			return context.Background()
		},
		want: errStage, called: true,
	}, {
		name: "handler gives up early",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			c.h[2].onSnapshot = func(_ context.Context, _ engine.SnapshotHeader, body engine.SnapshotBody) error {
				_, _ = body.Next()
				return errStage
			}
			return context.Background()
		},
		want: errStage, called: true,
	}, {
		name: "ctx canceled midway",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			var consumed atomic.Int64
			c.h[2].onSnapshot = readChunks(t, size, &consumed, func(n int64) {
				if n == 2 {
					cancel()
				}
			})
			return ctx
		},
		want: context.Canceled, called: true,
	}, {
		name: "ctx expired",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			t.Cleanup(cancel)
			return ctx
		},
		want: context.DeadlineExceeded,
	}, {
		name: "receiver crashes midway",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			var consumed atomic.Int64
			stopped := make(chan struct{})
			c.h[2].onSnapshot = readChunks(t, size, &consumed, func(n int64) {
				if n == 2 {
					go func() {
						defer close(stopped)
						c.net.Stop(2) // Close waits for this handler
					}()
				}
			})
			t.Cleanup(func() { <-stopped })
			return context.Background()
		},
		want: engine.ErrUnknownPeer, called: true,
	}, {
		name: "sender crashes midway",
		setup: func(t *testing.T, c *cluster, _ *chunkBody) context.Context {
			var consumed atomic.Int64
			c.h[2].onSnapshot = readChunks(t, size, &consumed, func(n int64) {
				if n == 2 {
					c.net.Stop(1)
				}
			})
			return context.Background()
		},
		want: engine.ErrTransportClosed, called: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, DefaultConfig(), 1, 2)
			body := &chunkBody{n: n, size: size}
			ctx := tc.setup(t, c, body)
			var handlerErr atomic.Pointer[error]
			inner := c.h[2].onSnapshot
			if inner == nil {
				var consumed atomic.Int64
				inner = readChunks(t, size, &consumed, nil)
			}
			c.h[2].onSnapshot = func(ctx context.Context, h engine.SnapshotHeader, b engine.SnapshotBody) error {
				err := inner(ctx, h, b)
				if err != nil {
					handlerErr.Store(&err)
				}
				return err
			}
			err := c.ep[1].SendSnapshot(ctx, snapHeader(2), body)
			if !errors.Is(err, tc.want) {
				t.Fatalf("SendSnapshot = %v, want %v", err, tc.want)
			}
			c.h[2].mu.Lock()
			called := len(c.h[2].mu.snapshots) > 0
			c.h[2].mu.Unlock()
			if called != tc.called {
				t.Fatalf("handler called = %v, want %v", called, tc.called)
			}
			if tc.called && tc.want != errStage {
				// The receiver saw the failure too.
				if handlerErr.Load() == nil {
					t.Fatalf("receiver's body did not fail")
				}
			}
		})
	}
}

func TestSnapshotUnknownPeer(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1)
	c.net.Endpoint(2) // not started
	for _, to := range []uint64{2, 3} {
		if err := c.ep[1].SendSnapshot(context.Background(), snapHeader(to), &chunkBody{n: 1, size: 8}); !errors.Is(err, engine.ErrUnknownPeer) {
			t.Fatalf("to %d: %v, want ErrUnknownPeer", to, err)
		}
	}
}
