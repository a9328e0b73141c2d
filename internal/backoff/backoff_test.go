package backoff

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNext(t *testing.T) {
	b, err := New(Config{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, NoJitter: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("wait %d = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 10*time.Millisecond {
		t.Fatalf("after Reset: %v", got)
	}
	j, err := New(Config{Initial: 100 * time.Millisecond, Jitter: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		j.Reset()
		if d := j.Next(); d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("jittered wait %v outside [50ms, 150ms]", d)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{
		{Initial: -1}, {Initial: 2 * time.Second, Max: time.Second}, {Multiplier: 0.5}, {Jitter: 2},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestRetry(t *testing.T) {
	ctx := context.Background()
	fast := Config{Initial: time.Microsecond, Max: time.Microsecond}
	calls := 0
	err := Retry(ctx, fast, func(context.Context) error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Retry = %v after %d calls, want nil after 3", err, calls)
	}
	stop := errors.New("stop")
	calls = 0
	err = Retry(ctx, fast, func(context.Context) error { calls++; return Permanent(stop) })
	if err != stop || calls != 1 {
		t.Fatalf("permanent: %v after %d calls", err, calls)
	}
	cctx, cancel := context.WithCancel(ctx)
	again := errors.New("again")
	calls = 0
	err = Retry(cctx, fast, func(context.Context) error {
		if calls++; calls == 2 {
			cancel()
		}
		return again
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, again) {
		t.Fatalf("cancelled: %v", err)
	}
}
