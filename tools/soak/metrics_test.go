//go:build linux

package main

import "testing"

// TestMetricsLabels: get sums the series of one metric (not of a metric
// whose name it prefixes) that carry every given label; byLabel splits
// them by a label.
func TestMetricsLabels(t *testing.T) {
	m := metrics{
		`conns_closed_total{listener="a",reason="eof"}`:     3,
		`conns_closed_total{listener="a",reason="timeout"}`: 2,
		`conns_closed_total{listener="b",reason="eof"}`:     5,
		`conns_closed_total_extra{listener="a"}`:            100,
		`conns_active`:                                      7,
	}
	if got := m.get("conns_closed_total", "listener", "a"); got != 5 {
		t.Errorf("get listener=a = %v, want 5", got)
	}
	if got := m.get("conns_closed_total"); got != 10 {
		t.Errorf("get all = %v, want 10", got)
	}
	if got := m.get("conns_active"); got != 7 {
		t.Errorf("get unlabelled = %v, want 7", got)
	}
	by := m.byLabel("conns_closed_total", "reason", "listener", "a")
	if len(by) != 2 || by["eof"] != 3 || by["timeout"] != 2 {
		t.Errorf("byLabel reason over listener=a = %v, want eof 3, timeout 2", by)
	}
}
