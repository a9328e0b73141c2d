package transport

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-db/flotilla/engine"
)

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.NodeID, valid.ClusterID, valid.ListenAddr = 1, 1, "127.0.0.1:0"
	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		errSub string // "" if valid
	}{
		{"valid", func(*Config) {}, ""},
		{"zero tunables mean defaults", func(c *Config) { *c = Config{NodeID: 1, ClusterID: 1, ListenAddr: ":0"} }, ""},
		{"no node", func(c *Config) { c.NodeID = 0 }, "NodeID"},
		{"no cluster", func(c *Config) { c.ClusterID = 0 }, "ClusterID"},
		{"no address", func(c *Config) { c.ListenAddr = "" }, "ListenAddr"},
		{"negative queue", func(c *Config) { c.QueueLen = -1 }, "QueueLen"},
		{"tiny frame", func(c *Config) { c.MaxFrameBytes = 100 }, "MaxFrameBytes"},
		{"tiny chunk", func(c *Config) { c.MaxSnapshotChunkBytes = 100 }, "MaxSnapshotChunkBytes"},
		{"queue below frame", func(c *Config) { c.QueueBytes = 2048; c.MaxFrameBytes = 4096 }, "QueueBytes"},
		{"negative rate", func(c *Config) { c.SnapshotRateBytesPerSec = -1 }, "SnapshotRate"},
		{"backoff inverted", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }, "BackoffMax"},
		{"negative timeout", func(c *Config) { c.DialTimeout = -1 }, "DialTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.mod(&c)
			before := c
			err := c.Validate()
			if c.Logger != before.Logger || c.QueueLen != before.QueueLen {
				t.Fatal("Validate modified the config")
			}
			switch {
			case tc.errSub == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.errSub != "" && (err == nil || !strings.Contains(err.Error(), tc.errSub)):
				t.Fatalf("error %v, want one about %s", err, tc.errSub)
			}
		})
	}
}

func TestLifecycleErrors(t *testing.T) {
	tr, err := New(testConfig(1, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Send(2, msgs(1, 2, 0, 1)); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Send before Start: %v", err)
	}
	h := &fakeHandler{}
	if err := tr.Start(h); err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(h); err == nil {
		t.Fatal("second Start succeeded")
	}
	if err := tr.Send(2, msgs(1, 2, 0, 1)); !errors.Is(err, engine.ErrUnknownPeer) {
		t.Fatalf("Send to unknown peer: %v", err)
	}
	if err := tr.Send(1, msgs(1, 1, 0, 1)); !errors.Is(err, engine.ErrUnknownPeer) {
		t.Fatalf("Send to self: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Send(2, msgs(1, 2, 0, 1)); !errors.Is(err, engine.ErrTransportClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if err := tr.Start(h); !errors.Is(err, engine.ErrTransportClosed) {
		t.Fatalf("Start after Close: %v", err)
	}

	// Close without Start releases the listener.
	tr2, err := New(testConfig(1, nil))
	if err != nil {
		t.Fatal(err)
	}
	addr := tr2.Addr().String()
	tr2.Close()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listener not released: %v", err)
	}
	lis.Close()
}

func TestBatchingInOrder(t *testing.T) {
	a, _ := start(t, testConfig(1, nil))
	b, hb := start(t, testConfig(2, nil))
	link(a, b)
	const sends, per = 500, 4
	for i := range sends {
		if err := a.Send(2, msgs(1, 2, uint64(i*per), per)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	waitUntil(t, "all messages", func() bool { return len(hb.messages(1)) == sends*per })
	got := indexes(hb.messages(1))
	want := indexes(msgs(1, 2, 0, sends*per))
	if !slices.Equal(got, want) {
		t.Fatalf("messages out of order or altered")
	}
	for _, bt := range hb.batches() {
		if bt.ClusterID != testCluster || bt.From != 1 || bt.To != 2 {
			t.Fatalf("batch header %d/%d/%d", bt.ClusterID, bt.From, bt.To)
		}
	}
	m := hb.messages(1)[10]
	if m.ShardID != 7 || string(m.Msg.Entries[0].Data) != "entry-10" || m.Msg.Type != raftpb.MsgApp {
		t.Fatalf("message altered: %+v", m)
	}
	sa, sb := a.Stats()[2], b.Stats()[1]
	t.Logf("%d sends -> %d frames", sends, sa.FramesSent)
	if sa.FramesSent >= sends/2 {
		t.Errorf("%d sends made %d frames: not batched", sends, sa.FramesSent)
	}
	if sa.MessagesSent != sends*per || sb.MessagesReceived != sends*per || sa.FramesSent != sb.FramesReceived ||
		sa.BytesSent != sb.BytesReceived || len(hb.batches()) != int(sb.FramesReceived) {
		t.Errorf("stats disagree: sent %+v received %+v", sa, sb)
	}
}

func TestFrameSplit(t *testing.T) {
	cfg := testConfig(1, nil)
	cfg.MaxFrameBytes = 4 << 10
	a, _ := start(t, cfg)
	cfg = testConfig(2, nil)
	cfg.MaxFrameBytes = 4 << 10
	b, hb := start(t, cfg)
	link(a, b)
	big := msgs(1, 2, 0, 300)
	for i := range big {
		big[i].Msg.Entries[0].Data = make([]byte, 100+i)
	}
	if err := a.Send(2, big); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "all messages", func() bool { return len(hb.messages(1)) == len(big) })
	if !slices.Equal(indexes(hb.messages(1)), indexes(big)) {
		t.Fatal("messages out of order")
	}
	for _, bt := range hb.batches() {
		size := 0
		for _, m := range bt.Messages {
			size += m.Msg.Size()
		}
		if size > cfg.MaxFrameBytes {
			t.Fatalf("frame with %d bytes of messages over the %d limit", size, cfg.MaxFrameBytes)
		}
	}
	// Frames are filled: at most twice as many as the bytes need.
	st := b.Stats()[1]
	if min := st.BytesReceived/uint64(cfg.MaxFrameBytes) + 1; st.FramesReceived < min || st.FramesReceived > 2*min {
		t.Fatalf("%d bytes in %d frames of at most %d bytes", st.BytesReceived, st.FramesReceived, cfg.MaxFrameBytes)
	}
	t.Logf("%d bytes in %d frames of at most %d bytes", st.BytesReceived, st.FramesReceived, cfg.MaxFrameBytes)
	if s := b.Stats()[1]; s.Refused != 0 {
		t.Fatalf("receiver refused %d frames", s.Refused)
	}
}

func TestMessageTooLarge(t *testing.T) {
	cfg := testConfig(1, nil)
	cfg.MaxFrameBytes = 4 << 10
	a, _ := start(t, cfg)
	b, hb := start(t, testConfig(2, nil))
	link(a, b)
	ms := msgs(1, 2, 0, 3)
	ms[1].Msg.Entries[0].Data = make([]byte, 5<<10)
	err := a.Send(2, ms)
	var se *SizeError
	if !errors.As(err, &se) || !errors.Is(err, ErrTooLarge) || se.Size <= se.Limit {
		t.Fatalf("Send of a too large message: %v", err)
	}
	// Nothing of the refused Send was queued; the next one goes through.
	if err := a.Send(2, msgs(1, 2, 10, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "message", func() bool { return len(hb.messages(1)) == 1 })
	if got := indexes(hb.messages(1)); got[0] != 10 {
		t.Fatalf("got %v", got)
	}
}

func TestQueueFull(t *testing.T) {
	// A peer that accepts TCP connections and never answers: the sender
	// hangs in its connection attempt while the queue fills.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	cfg := testConfig(1, nil)
	cfg.QueueLen = 8
	a, _ := start(t, cfg)
	a.AddPeer(2, hole.Addr().String())

	if err := a.Send(2, msgs(1, 2, 0, 9)); !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("Send over QueueLen: %v", err)
	}
	// The first message wakes the sender, which takes it and hangs in its
	// connection attempt; once the hole has accepted that connection the
	// sender holds no more than that message and the queue is empty. (Sending
	// more before that point lets the sender take a varying number.)
	if err := a.Send(2, msgs(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := hole.Accept(); err == nil {
			accepted <- c
		}
	}()
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(cfg.DialTimeout / 2):
		t.Fatal("the sender did not connect")
	}
	queued := 0
	for i := 1; ; i++ {
		err := a.Send(2, msgs(1, 2, uint64(i), 1))
		if errors.Is(err, engine.ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		queued++
		if queued > cfg.QueueLen {
			t.Fatalf("queue accepted %d messages, QueueLen %d", queued, cfg.QueueLen)
		}
	}
	if queued != cfg.QueueLen {
		t.Fatalf("queue accepted %d messages, QueueLen %d", queued, cfg.QueueLen)
	}
	if s := a.Stats()[2]; s.Dropped != 10 {
		t.Fatalf("dropped %d, want 10", s.Dropped)
	}
	// Close cuts the hanging connection attempt short.
	done := make(chan struct{})
	go func() { a.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.DialTimeout / 2):
		t.Fatal("Close waited for the connection attempt")
	}
}

func TestReconnectAfterRestart(t *testing.T) {
	a, ha := start(t, testConfig(1, nil))
	b, hb := start(t, testConfig(2, nil))
	link(a, b)
	if err := a.Send(2, msgs(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "first message", func() bool { return len(hb.messages(1)) == 1 })

	addr := b.Addr().String()
	b.Close()
	var i uint64 = 1
	waitUntil(t, "peer reported unreachable", func() bool {
		a.Send(2, msgs(1, 2, i, 1)) // fails or is lost: b is down
		i++
		return ha.unreachable(2) > 0
	})

	cfg := testConfig(2, nil)
	cfg.ListenAddr = addr
	b2, hb2 := start(t, cfg)
	b2.AddPeer(1, a.Addr().String())
	waitUntil(t, "a message to the restarted peer", func() bool {
		err := a.Send(2, msgs(1, 2, i, 1))
		i++
		if err != nil && !errors.Is(err, ErrPeerUnreachable) {
			t.Fatalf("Send: %v", err)
		}
		return len(hb2.messages(1)) > 0
	})
	// And back.
	if err := b2.Send(1, msgs(2, 1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a message from the restarted peer", func() bool { return len(ha.messages(2)) == 1 })
}

func TestWrongClusterRefused(t *testing.T) {
	sink := &logSink{}
	a, ha := start(t, testConfig(1, sink))
	b, _ := start(t, testConfig(2, nil))
	cfg := testConfig(3, nil)
	cfg.ClusterID = testCluster + 1
	c, hc := start(t, cfg)
	link(a, b, c)

	waitUntil(t, "other cluster told unreachable", func() bool {
		c.Send(1, msgs(3, 1, 0, 1))
		return hc.unreachable(1) > 0
	})
	if n := a.Stats()[3].Refused; n == 0 {
		t.Fatal("no refusal counted")
	}
	if !sink.contains("refused frame", "cluster ID mismatch") {
		t.Fatalf("no refusal logged: %q", sink.lines)
	}
	if len(ha.messages(3)) != 0 {
		t.Fatal("a frame of another cluster was delivered")
	}
	// The node keeps serving its own cluster.
	if err := b.Send(1, msgs(2, 1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "message from the same cluster", func() bool { return len(ha.messages(2)) == 1 })
}

func TestRemovedNodeRefused(t *testing.T) {
	var removed atomic.Uint64
	sink := &logSink{}
	cfg := testConfig(1, sink)
	cfg.IsRemoved = func(id uint64) bool { return id == removed.Load() }
	a, ha := start(t, cfg)
	b, _ := start(t, testConfig(2, nil))
	c, hc := start(t, testConfig(3, nil))
	link(a, b, c)

	if err := c.Send(1, msgs(3, 1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "message before removal", func() bool { return len(ha.messages(3)) == 1 })
	removed.Store(3)
	waitUntil(t, "removed node told unreachable", func() bool {
		c.Send(1, msgs(3, 1, 1, 1))
		return hc.unreachable(1) > 0
	})
	if len(ha.messages(3)) != 1 || a.Stats()[3].Refused == 0 || !sink.contains("removed node") {
		t.Fatalf("removed node not refused: %d messages, stats %+v", len(ha.messages(3)), a.Stats()[3])
	}
	if err := b.Send(1, msgs(2, 1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "message from a member", func() bool { return len(ha.messages(2)) == 1 })
}

func TestRemovePeerAndResolver(t *testing.T) {
	var resolvable atomic.Value // string: node 2's address once set
	cfg := testConfig(1, nil)
	cfg.Resolver = func(id uint64) (string, error) {
		if addr, ok := resolvable.Load().(string); ok && id == 2 {
			return addr, nil
		}
		return "", errors.New("unknown node")
	}
	a, _ := start(t, cfg)
	b, hb := start(t, testConfig(2, nil))
	a.AddPeer(2, b.Addr().String())
	if err := a.Send(2, msgs(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "message", func() bool { return len(hb.messages(1)) == 1 })
	a.RemovePeer(2)
	if err := a.Send(2, msgs(1, 2, 1, 1)); !errors.Is(err, engine.ErrUnknownPeer) {
		t.Fatalf("Send to a removed peer: %v", err)
	}
	// The resolver brings it back.
	resolvable.Store(b.Addr().String())
	if err := a.Send(2, msgs(1, 2, 2, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "message after resolve", func() bool { return len(hb.messages(1)) == 2 })
	if got := indexes(hb.messages(1)); got[1] != 2 {
		t.Fatalf("got %v", got)
	}
}
