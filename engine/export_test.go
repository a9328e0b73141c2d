package engine

import (
	"context"
	"time"
)

// ProposeSessionExpiry proposes the expiry of shardID's client sessions last
// used before cutoff, as a leader's sweep does (session.go), and waits for
// it to apply.
func (e *Engine) ProposeSessionExpiry(ctx context.Context, shardID uint64, cutoff time.Time) error {
	_, err := e.propose(ctx, shardID, expireCommand(cutoff.UnixNano()))
	return err
}
