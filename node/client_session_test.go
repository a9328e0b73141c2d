package node_test

import (
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// TestClientServiceSessions: writes that carry a session apply once however
// often they are sent, single or in a batch, and the session's refusals map
// to their reasons.
func TestClientServiceSessions(t *testing.T) {
	h := newHarness(t, 4, node.DefaultClientServiceConfig())
	ctx := ctxT(t, 60*time.Second)
	key := []byte("sessions")
	l := h.leaderOf(ctx, key)
	kv := h.kv(l)
	sess := func(seq, ack uint64, register bool) *nodepb.Session {
		return &nodepb.Session{Id: 0x5e55, Seq: seq, Ack: ack, Register: register}
	}

	cas := &nodepb.CompareAndSwapRequest{Key: key, ExpectAbsent: true, NewValue: []byte("1"), Session: sess(1, 1, true)}
	for i := range 3 {
		resp, err := kv.CompareAndSwap(ctx, cas)
		if err != nil || !resp.GetSwapped() || resp.GetFound() {
			t.Fatalf("CAS, attempt %d: %v %v", i, resp, err)
		}
	}
	del := &nodepb.DeleteRequest{Key: key, Session: sess(2, 1, false)}
	for i := range 2 {
		if resp, err := kv.Delete(ctx, del); err != nil || !resp.GetExisted() {
			t.Fatalf("delete, attempt %d: %v %v", i, resp, err)
		}
	}
	// A batch resent whole: its put and CAS apply once.
	batch := &nodepb.BatchRequest{Ops: []*nodepb.Op{
		{Op: &nodepb.Op_Put{Put: &nodepb.PutRequest{Key: key, Value: []byte("a"), Session: sess(3, 3, false)}}},
		{Op: &nodepb.Op_Cas{Cas: &nodepb.CompareAndSwapRequest{Key: key, Expected: []byte("a"), NewValue: []byte("b"), Session: sess(4, 3, false)}}},
	}}
	var first *nodepb.BatchResponse
	for i := range 2 {
		resp, err := kv.Batch(ctx, batch)
		if err != nil || resp.GetResults()[0].GetPut() == nil || !resp.GetResults()[1].GetCas().GetSwapped() {
			t.Fatalf("batch, attempt %d: %v %v", i, resp, err)
		}
		if first == nil {
			first = resp
		} else if !proto.Equal(first, resp) {
			t.Fatalf("batch resent: %v, first %v", resp, first)
		}
	}
	if got, err := kv.Get(ctx, &nodepb.GetRequest{Key: key}); err != nil || string(got.GetValue()) != "b" {
		t.Fatalf("get: %v %v", got, err)
	}
	if r := h.c.Engine(l).Stats().SessionReplays; r < 4 {
		t.Fatalf("%d replays, want 4", r)
	}

	// Below the watermark (3): a duplicate.
	_, err := kv.Delete(ctx, del)
	if e := wantError(t, "duplicate", err, codes.AlreadyExists, nodepb.Reason_REASON_DUPLICATE_REQUEST); e.GetNotApplied() || e.GetShardId() != h.shardOf(key) {
		t.Fatalf("duplicate: %v", e)
	}
	// A session the shard does not know.
	_, err = kv.Put(ctx, &nodepb.PutRequest{Key: key, Value: []byte("x"), Session: &nodepb.Session{Id: 77, Seq: 1}})
	if e := wantError(t, "unknown session", err, codes.FailedPrecondition, nodepb.Reason_REASON_SESSION_NOT_FOUND); !e.GetNotApplied() {
		t.Fatalf("unknown session: %v", e)
	}
	// Malformed sessions.
	for _, s := range []*nodepb.Session{{Seq: 1}, {Id: 1, Seq: 1, Ack: 2}} {
		_, err = kv.Put(ctx, &nodepb.PutRequest{Key: key, Value: []byte("x"), Session: s})
		wantError(t, "bad session", err, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST)
	}
	if got, err := kv.Get(ctx, &nodepb.GetRequest{Key: key}); err != nil || string(got.GetValue()) != "b" {
		t.Fatalf("get after the refusals: %v %v", got, err)
	}
}
