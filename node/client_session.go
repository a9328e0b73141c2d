package node

import (
	"context"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/nodepb"
)

// propose runs the write cmd on shardID: exactly once under sess, the
// request's session, if it carries one (engine.ProposeSession), else as a
// plain proposal.
func (s *ClientService) propose(ctx context.Context, shardID uint64, sess *nodepb.Session, cmd []byte) ([]byte, error) {
	if sess == nil {
		return s.engine.Propose(ctx, shardID, cmd)
	}
	return s.engine.ProposeSession(ctx, shardID, engine.Session{
		ID: sess.GetId(), Seq: sess.GetSeq(), Ack: sess.GetAck(), Register: sess.GetRegister(),
	}, cmd)
}
