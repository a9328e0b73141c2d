package placer

import (
	"github.com/flotilla-db/flotilla/placement"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the placement driver's counters to Prometheus. The
// counters are the driver's on this node: they grow while this node leads
// the meta shard (flotilla_placement_active says whether it does now).
type Collector struct {
	get                                  func() *Placer
	ops, quorumLost, plans               *prometheus.Desc
	active, inflight, paused, repl, lead *prometheus.Desc
}

// NewCollector returns a collector of the Placer get returns (nil: none
// yet, nothing exported).
func NewCollector(get func() *Placer) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("flotilla_placement_"+name, help, labels, nil)
	}
	return &Collector{
		get:        get,
		ops:        d("ops_total", "Placement operations by kind and outcome (started, succeeded, failed, dropped).", "kind", "outcome"),
		quorumLost: d("quorum_lost_total", "Reports of shards without a quorum of live voters, one per shard per plan."),
		plans:      d("plans_total", "Plans made by the driver."),
		active:     d("active", "1 if this node leads the meta shard and runs the driver's steps."),
		inflight:   d("ops_in_flight", "Placement operations in flight."),
		paused:     d("paused", "1 if the driver is paused (flotillactl placement pause)."),
		repl:       d("replica_spread", "Largest minus smallest replica count of user shards over live, non-draining nodes, at the last plan."),
		lead:       d("leader_spread", "Largest minus smallest leader count of user shards over live, non-draining nodes, at the last plan."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.ops, c.quorumLost, c.plans, c.active, c.inflight, c.paused, c.repl, c.lead} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	p := c.get()
	if p == nil {
		return
	}
	s := p.Stats()
	for outcome, m := range map[string]map[placement.Kind]uint64{"started": s.Started, "succeeded": s.Succeeded, "failed": s.Failed, "dropped": s.Dropped} {
		for k := placement.Repair; k < placement.QuorumLost; k++ {
			ch <- prometheus.MustNewConstMetric(c.ops, prometheus.CounterValue, float64(m[k]), k.String(), outcome)
		}
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(c.quorumLost, prometheus.CounterValue, float64(s.QuorumLost))
	ch <- prometheus.MustNewConstMetric(c.plans, prometheus.CounterValue, float64(s.Plans))
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, b(p.Active()))
	ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(s.InFlight))
	ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, b(s.Paused))
	ch <- prometheus.MustNewConstMetric(c.repl, prometheus.GaugeValue, float64(s.ReplicaSpread))
	ch <- prometheus.MustNewConstMetric(c.lead, prometheus.GaugeValue, float64(s.LeaderSpread))
}
