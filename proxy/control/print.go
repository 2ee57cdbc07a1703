package control

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// PrintResult writes a verb's result for a person. Every string is
// escaped: the daemon read it from files and requests.
func PrintResult(w io.Writer, verb string, result json.RawMessage) error {
	switch verb {
	case "keys":
		var keys []KeyInfo
		if err := json.Unmarshal(result, &keys); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tORIGIN\tLISTENERS\tNOT AFTER\tSERIAL\tSUBJECT\tSANS\tSOURCE")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", Printable(k.Name), Printable(k.Origin),
				orDash(Printable(strings.Join(k.Listeners, ","))), notAfter(k.NotAfter), Printable(k.Serial),
				Printable(k.Subject), orDash(Printable(strings.Join(k.SANs, ","))), Printable(k.Source))
		}
		return tw.Flush()
	case "set-key", "commit":
		var k KeyInfo
		if err := json.Unmarshal(result, &k); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		what := "staged"
		next := fmt.Sprintf("; 'sealproxy ctl commit %s' swaps it in, 'abort %s' drops it", Printable(k.Name), Printable(k.Name))
		if verb == "commit" {
			what, next = "committed", "; new handshakes use it"
		}
		fmt.Fprintf(w, "%s key %s: %s (serial %s, not after %s)%s\n", what, Printable(k.Name), Printable(k.Subject),
			Printable(k.Serial), notAfter(k.NotAfter), next)
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(result, &m); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	switch verb {
	case "abort":
		fmt.Fprintf(w, "aborted key %s\n", Printable(fmt.Sprint(m["aborted"])))
	case "remove-key":
		fmt.Fprintf(w, "removed key %s\n", Printable(fmt.Sprint(m["removed"])))
	default:
		var keys []string
		if ks, ok := m["keys"].([]any); ok {
			for _, k := range ks {
				keys = append(keys, fmt.Sprint(k))
			}
		}
		fmt.Fprintf(w, "listener %s now chooses from keys %s\n", Printable(fmt.Sprint(m["listener"])), Printable(strings.Join(keys, ",")))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func notAfter(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
