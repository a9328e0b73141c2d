package transport

import (
	"context"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// genBody generates a snapshot body on the fly: chunks chunks of size bytes,
// each a window of one random pattern, so that it holds no more than the
// pattern in memory.
type genBody struct {
	chunks, size int
	// hook, if set, runs before chunk i is produced; a non-nil error is
	// returned by Next.
	hook func(i int) error

	pattern []byte
	n       int
	crc     uint32 // of the chunks produced
}

func (g *genBody) Next() ([]byte, error) {
	if g.n == g.chunks {
		return nil, io.EOF
	}
	if g.hook != nil {
		if err := g.hook(g.n); err != nil {
			return nil, err
		}
	}
	if g.pattern == nil {
		r := rand.New(rand.NewPCG(1, 2))
		g.pattern = make([]byte, 2*g.size)
		for i := range g.pattern {
			g.pattern[i] = byte(r.Uint32())
		}
	}
	off := (g.n * 7919) % (g.size + 1)
	chunk := g.pattern[off : off+g.size]
	g.n++
	g.crc = crc32.Update(g.crc, crc32.IEEETable, chunk)
	return chunk, nil
}

// heapPeak samples HeapInuse and keeps the maximum.
type heapPeak struct{ max atomic.Uint64 }

func (p *heapPeak) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for {
		cur := p.max.Load()
		if ms.HeapInuse <= cur || p.max.CompareAndSwap(cur, ms.HeapInuse) {
			return
		}
	}
}

// TestSnapshotStream streams 100 MiB generated on the fly and checks that it
// arrives intact, in order, and that memory stays well below its size.
func TestSnapshotStream(t *testing.T) {
	const chunkSize, chunks = 256 << 10, 400 // 100 MiB
	a, _ := start(t, testConfig(1, nil))
	b, hb := start(t, testConfig(2, nil))
	link(a, b)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak heapPeak
	var recvCRC uint32
	var recvBytes int
	hb.onSnapshot = func(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error {
		for i := 0; ; i++ {
			chunk, err := body.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if len(chunk) != chunkSize {
				return errors.New("chunk boundaries not kept")
			}
			recvCRC = crc32.Update(recvCRC, crc32.IEEETable, chunk)
			recvBytes += len(chunk)
			if i%16 == 0 {
				peak.sample()
			}
		}
	}
	body := &genBody{chunks: chunks, size: chunkSize, hook: func(i int) error {
		if i%16 == 0 {
			peak.sample()
		}
		return nil
	}}
	start := time.Now()
	if err := a.SendSnapshot(context.Background(), snapHeader(1, 2), body); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if recvBytes != chunks*chunkSize || recvCRC != body.crc {
		t.Fatalf("received %d bytes, crc %x; sent %d, crc %x", recvBytes, recvCRC, chunks*chunkSize, body.crc)
	}
	hs := hb.snapshots()
	if len(hs) != 1 || hs[0].ClusterID != testCluster || hs[0].From != 1 || hs[0].To != 2 ||
		hs[0].ShardID != 7 || hs[0].Msg.Snapshot.Metadata.Index != 10 {
		t.Fatalf("header %+v", hs)
	}
	grew := int64(peak.max.Load()) - int64(base.HeapInuse)
	t.Logf("100 MiB in %v (%.0f MiB/s); HeapInuse %d MiB before, peak %d MiB",
		elapsed.Round(time.Millisecond), 100/elapsed.Seconds(), base.HeapInuse>>20, peak.max.Load()>>20)
	if grew > 48<<20 {
		t.Fatalf("heap grew by %d MiB streaming a 100 MiB snapshot", grew>>20)
	}
	sa, sb := a.Stats()[2], b.Stats()[1]
	if sa.SnapshotsSent != 1 || sa.SnapshotBytesSent != chunks*chunkSize ||
		sb.SnapshotsReceived != 1 || sb.SnapshotBytesReceived != chunks*chunkSize {
		t.Fatalf("stats: sender %+v receiver %+v", sa, sb)
	}
}

func TestSnapshotRateLimit(t *testing.T) {
	const rate, chunk, chunks = 8 << 20, 64 << 10, 64 // 4 MiB at 8 MiB/s
	cfg := testConfig(1, nil)
	cfg.SnapshotRateBytesPerSec = rate
	a, _ := start(t, cfg)
	b, _ := start(t, testConfig(2, nil))
	link(a, b)
	start := time.Now()
	if err := a.SendSnapshot(context.Background(), snapHeader(1, 2), &genBody{chunks: chunks, size: chunk}); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	ideal := time.Duration(float64(chunk*(chunks-1)) / rate * float64(time.Second))
	t.Logf("4 MiB at 8 MiB/s took %v (ideal %v)", elapsed, ideal)
	if elapsed < ideal*9/10 || elapsed > 10*ideal {
		t.Fatalf("took %v, want about %v", elapsed, ideal)
	}
}

func TestSnapshotHandlerError(t *testing.T) {
	a, _ := start(t, testConfig(1, nil))
	b, hb := start(t, testConfig(2, nil))
	link(a, b)
	hb.onSnapshot = func(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error {
		if _, err := body.Next(); err != nil {
			return err
		}
		return errors.New("no space left on device")
	}
	err := a.SendSnapshot(context.Background(), snapHeader(1, 2), &genBody{chunks: 1000, size: 64 << 10})
	var re *RemoteError
	if !errors.As(err, &re) || re.Node != 2 || !strings.Contains(re.Msg, "no space left") {
		t.Fatalf("SendSnapshot: %v", err)
	}
}

// interruptedSnapshot streams a snapshot whose sender side is interrupted by
// interrupt (called once the receiver has a chunk) and returns SendSnapshot's
// error and the error the receiver's handler saw.
func interruptedSnapshot(t *testing.T, a *Transport, hb *fakeHandler, ctx context.Context, body *genBody) (sendErr, recvErr error) {
	t.Helper()
	recvDone := make(chan error, 1)
	hb.onSnapshot = func(ctx context.Context, h engine.SnapshotHeader, b engine.SnapshotBody) error {
		for {
			if _, err := b.Next(); err != nil {
				recvDone <- err
				return err
			}
		}
	}
	sendErr = a.SendSnapshot(ctx, snapHeader(1, 2), body)
	select {
	case recvErr = <-recvDone:
	case <-time.After(10 * time.Second):
		t.Fatal("receiver's handler did not return")
	}
	return sendErr, recvErr
}

func TestSnapshotCancel(t *testing.T) {
	a, _ := start(t, testConfig(1, nil))
	b, hb := start(t, testConfig(2, nil))
	link(a, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := &genBody{chunks: 1 << 20, size: 64 << 10, hook: func(i int) error {
		if i == 5 {
			cancel()
		}
		return nil
	}}
	sendErr, recvErr := interruptedSnapshot(t, a, hb, ctx, body)
	if !errors.Is(sendErr, context.Canceled) {
		t.Fatalf("SendSnapshot: %v", sendErr)
	}
	if recvErr == nil || recvErr == io.EOF {
		t.Fatalf("receiver saw %v", recvErr)
	}
}

func TestSnapshotBodyError(t *testing.T) {
	a, _ := start(t, testConfig(1, nil))
	b, hb := start(t, testConfig(2, nil))
	link(a, b)
	errDisk := errors.New("disk read failed")
	body := &genBody{chunks: 100, size: 64 << 10, hook: func(i int) error {
		if i == 3 {
			return errDisk
		}
		return nil
	}}
	sendErr, recvErr := interruptedSnapshot(t, a, hb, context.Background(), body)
	if !errors.Is(sendErr, errDisk) {
		t.Fatalf("SendSnapshot: %v", sendErr)
	}
	if recvErr == nil || recvErr == io.EOF {
		t.Fatalf("receiver saw %v", recvErr)
	}
}

func TestSnapshotChunkTooLarge(t *testing.T) {
	// The sender's own limit.
	cfg := testConfig(1, nil)
	cfg.MaxSnapshotChunkBytes = 64 << 10
	a, _ := start(t, cfg)
	b, hb := start(t, testConfig(2, nil))
	link(a, b)
	recvDone := make(chan error, 1)
	hb.onSnapshot = func(ctx context.Context, h engine.SnapshotHeader, b engine.SnapshotBody) error {
		for {
			if _, err := b.Next(); err != nil {
				recvDone <- err
				return err
			}
		}
	}
	sendErr := a.SendSnapshot(context.Background(), snapHeader(1, 2), &genBody{chunks: 2, size: 128 << 10})
	var se *SizeError
	if !errors.As(sendErr, &se) || se.Size != 128<<10 || se.Limit != 64<<10 {
		t.Fatalf("SendSnapshot: %v", sendErr)
	}
	// The stream may end before the server's handler starts; a handler that
	// did run must have seen an error, never a clean end.
	select {
	case recvErr := <-recvDone:
		if recvErr == nil || recvErr == io.EOF {
			t.Fatalf("receiver saw %v", recvErr)
		}
	default:
	}

	// The receiver's limit, smaller than the sender's.
	sink := &logSink{}
	cfg = testConfig(3, sink)
	cfg.MaxSnapshotChunkBytes = 64 << 10
	c, _ := start(t, cfg)
	link(b, c)
	err := b.SendSnapshot(context.Background(), snapHeader(2, 3), &genBody{chunks: 2, size: 128 << 10})
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "exceeds the limit") {
		t.Fatalf("SendSnapshot: %v", err)
	}
	if c.Stats()[2].Refused != 1 || !sink.contains("refused snapshot chunk") {
		t.Fatalf("no refusal: %+v %q", c.Stats()[2], sink.lines)
	}
}

// TestCloseDuringSnapshot closes the receiver, then the sender, while a
// snapshot streams: both sides fail and Close returns.
func TestCloseDuringSnapshot(t *testing.T) {
	for _, closeSender := range []bool{false, true} {
		a, _ := start(t, testConfig(1, nil))
		b, hb := start(t, testConfig(2, nil))
		link(a, b)
		victim := b
		if closeSender {
			victim = a
		}
		body := &genBody{chunks: 1 << 20, size: 64 << 10, hook: func(i int) error {
			if i == 5 {
				go victim.Close()
			}
			return nil
		}}
		sendErr, recvErr := interruptedSnapshot(t, a, hb, context.Background(), body)
		if sendErr == nil || recvErr == nil || recvErr == io.EOF {
			t.Fatalf("closing sender %v: SendSnapshot %v, receiver %v", closeSender, sendErr, recvErr)
		}
		if closeSender && !errors.Is(sendErr, engine.ErrTransportClosed) {
			t.Fatalf("SendSnapshot on a closing transport: %v", sendErr)
		}
		victim.Close()
	}
}
