package placer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/placement"
)

// intentStore implements placement.IntentStore on the meta shard's intent
// records.
type intentStore struct{ s *nodemeta.Store }

// intentV1 is an intent as stored: explicit names, kinds and roles by name,
// so that the record does not change with package placement's Go names or
// the order of its constants. A field added later must be optional.
type intentV1 struct {
	Version  int       `json:"v"`
	Kind     string    `json:"kind"`
	ShardID  uint64    `json:"shard_id"`
	Add      []uint64  `json:"add,omitempty"`
	Remove   replicaV1 `json:"remove"`
	Leader   uint64    `json:"leader,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Learners []uint64  `json:"learners,omitempty"`
	Started  time.Time `json:"started"`
}

type replicaV1 struct {
	NodeID    uint64 `json:"node_id,omitempty"`
	ReplicaID uint64 `json:"replica_id,omitempty"`
	Role      string `json:"role,omitempty"`
}

func encodeIntent(in placement.Intent) ([]byte, error) {
	v := intentV1{Version: 1, Kind: in.Op.Kind.String(), ShardID: in.Op.ShardID, Add: in.Op.Add,
		Leader: in.Op.Leader, Reason: in.Op.Reason, Learners: in.Learners, Started: in.Started.UTC()}
	if in.Op.Remove.NodeID != 0 {
		v.Remove = replicaV1{NodeID: in.Op.Remove.NodeID, ReplicaID: in.Op.Remove.ReplicaID, Role: in.Op.Remove.Role.String()}
	}
	return json.Marshal(v)
}

func decodeIntent(shardID uint64, raw []byte) (placement.Intent, error) {
	var v intentV1
	if err := json.Unmarshal(raw, &v); err != nil {
		return placement.Intent{}, fmt.Errorf("placer: intent of shard %d: %w", shardID, err)
	}
	if v.Version != 1 || v.ShardID != shardID {
		return placement.Intent{}, fmt.Errorf("placer: intent of shard %d: version %d, shard %d", shardID, v.Version, v.ShardID)
	}
	op := placement.Op{ShardID: v.ShardID, Add: v.Add, Leader: v.Leader, Reason: v.Reason}
	if err := op.Kind.UnmarshalText([]byte(v.Kind)); err != nil {
		return placement.Intent{}, fmt.Errorf("placer: intent of shard %d: %w", shardID, err)
	}
	if v.Remove.NodeID != 0 {
		op.Remove = placement.Replica{NodeID: v.Remove.NodeID, ReplicaID: v.Remove.ReplicaID}
		if err := op.Remove.Role.UnmarshalText([]byte(v.Remove.Role)); err != nil {
			return placement.Intent{}, fmt.Errorf("placer: intent of shard %d: %w", shardID, err)
		}
	}
	return placement.Intent{Op: op, Learners: v.Learners, Started: v.Started}, nil
}

func (s intentStore) Save(ctx context.Context, in placement.Intent) error {
	raw, err := encodeIntent(in)
	if err != nil {
		return err
	}
	return s.s.PutIntent(ctx, in.Op.ShardID, raw)
}

func (s intentStore) Delete(ctx context.Context, shardID uint64) error {
	return s.s.DeleteIntent(ctx, shardID)
}

// Load reads the intents linearizably: a new leader must see every intent
// its predecessor recorded. An intent that does not decode is an error: the
// driver must not start operations while one it cannot read may be in
// flight.
func (s intentStore) Load(ctx context.Context) ([]placement.Intent, error) {
	raw, err := s.s.Intents(ctx, nodemeta.Linearizable)
	if err != nil {
		return nil, err
	}
	out := make([]placement.Intent, 0, len(raw))
	for id, b := range raw {
		in, err := decodeIntent(id, b)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}
