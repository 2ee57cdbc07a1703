package main

import "strings"

// Event Log severities of a log line (the Windows service writes each line
// of the daemon's log as one event).
const (
	eventInfo = iota
	eventWarning
	eventError
)

// eventLevel classifies a line of the daemon's text log, or of its final
// "sealproxy: error:" / "sealproxy: hint:" report, for the Event Log.
func eventLevel(line string) int {
	switch {
	case strings.Contains(line, " level=ERROR "), strings.HasPrefix(line, "level=ERROR "), strings.Contains(line, ": error: "):
		return eventError
	case strings.Contains(line, " level=WARN "), strings.HasPrefix(line, "level=WARN "), strings.Contains(line, ": hint: "):
		return eventWarning
	}
	return eventInfo
}
