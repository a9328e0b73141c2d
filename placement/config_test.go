package placement

import (
	"errors"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for name, c := range map[string]Config{
		"negative RF":        {ReplicationFactor: -1},
		"even meta voters":   {MetaVoters: 4},
		"negative DownAfter": {DownAfter: -time.Second},
		"tolerance 1":        {Tolerance: 1},
		"disk fraction 1.5":  {MaxDiskFraction: 1.5},
		"negative ops":       {MaxOpsPerPlan: -3},
		"negative snaps":     {MaxSnapshotsPerNode: -1},
		"negative min tol":   {MinTolerance: -2},
	} {
		if err := c.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: %v, want ErrBadConfig", name, err)
		}
	}
	c := Config{Tolerance: 0.1}
	if d := c.withDefaults(); d.Tolerance != 0.1 || d.ReplicationFactor != 3 || c.ReplicationFactor != 0 {
		t.Errorf("withDefaults: %+v from %+v", d, c)
	}
}
