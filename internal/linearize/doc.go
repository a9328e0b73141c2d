// Package linearize records the history of operations that concurrent clients
// make against Flotilla's key-value store and checks it for linearizability
// with porcupine (github.com/anishathalye/porcupine). It is meant for cluster
// tests; nothing in production imports it.
//
// # Recording
//
// A test creates one Recorder and shares it among its client goroutines. Each
// client brackets every request:
//
//	p := rec.Begin(clientID, linearize.Put("k", "v"))
//	err := client.Put(ctx, "k", "v")
//	switch {
//	case err == nil:
//		p.End(linearize.Result{})
//	case notApplied(err): // an error that guarantees the write was not applied
//		p.Failed()
//	default: // timeout, ambiguous error, crashed node
//		p.Unknown()
//	}
//
// Begin must be called before the request is sent and End after the response
// arrived: the history orders two operations only if one's End happened
// before the other's Begin, and treats all others as concurrent. Stamps come
// from a logical clock (an atomic counter), so they are unique and follow real
// time exactly; the Recorder also keeps wall-clock offsets to match
// operations with the cluster's logs.
//
// # Outcomes
//
// End records a completed operation and its Result. Failed drops the
// operation: it did not happen. Unknown handles an operation that may or may
// not have taken effect, possibly much later, the classic porcupine way: the
// operation returns at infinity, and the model accepts any output for it.
// The checker can then place its effect anywhere after its call, or after
// every other operation, where nobody sees it, which is the same as never.
// A CAS with an unknown outcome swaps iff the value matches where the checker
// places it. A Get with an unknown outcome is dropped, as a read without a
// result constrains nothing. Each unknown operation widens the search, so
// tests should keep them to a few per key.
//
// # Checking
//
// Check runs porcupine on the history, split by key (a key-value history is
// linearizable iff each key's history is), with one state per key: the value
// and whether it is present. It returns Ok, Illegal or, if the timeout
// expired, Unknown. For Illegal, the result describes the keys at fault and
// the operations the checker could not order, and, if Config asks for it, a
// path to porcupine's HTML visualization of the history.
//
// # Concurrency
//
// Recorder is safe for concurrent use; a mutex guards the recorded history.
// Exactly one of End, Unknown or Failed must be called on each Pending, once,
// from any goroutine. Check may run while clients record: it checks a
// snapshot, in which operations still in flight count as unknown.
package linearize
