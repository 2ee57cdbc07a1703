package main

import "testing"

func TestEventLevel(t *testing.T) {
	for line, want := range map[string]int{
		`time=2026-01-01T00:00:00Z level=ERROR msg="unlocking key failed" key=web`:                  eventError,
		`time=2026-01-01T00:00:00Z level=WARN msg="waiting for approval" key=web`:                   eventWarning,
		`time=2026-01-01T00:00:00Z level=INFO msg=ready listeners=1`:                                eventInfo,
		`time=2026-01-01T00:00:00Z level=INFO msg="connection closed" err="level=ERROR in a value"`: eventInfo,
		`sealproxy: error: 1 key(s) still locked: ...`:                                              eventError,
		`sealproxy: hint: check that this host reaches the Tang servers`:                            eventWarning,
	} {
		if got := eventLevel(line); got != want {
			t.Errorf("eventLevel(%q) = %d, want %d", line, got, want)
		}
	}
}
