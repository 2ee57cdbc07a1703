package unlock

import (
	"fmt"
	"io"
	"strings"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// Node describes one pin of a JWE without contacting any server.
type Node struct {
	Pin string `json:"pin"`
	// tang
	URL         string   `json:"url,omitempty"`
	Kid         string   `json:"kid,omitempty"`
	Thumbprints []string `json:"signing_thumbprints,omitempty"`
	Curve       string   `json:"curve,omitempty"`
	// sss
	Threshold int     `json:"t,omitempty"`
	Shares    []*Node `json:"shares,omitempty"`
}

// Inspect parses a JWE and describes its pins: Tang URLs, key ids and the
// signing-key thumbprints of the stored advertisements, sss thresholds.
func Inspect(data []byte) (*Node, error) {
	j, err := parseJWE(data)
	if err != nil {
		return nil, err
	}
	n := &Node{Pin: j.header.Clevis.Pin}
	switch n.Pin {
	case "tang":
		t := j.header.Clevis.Tang
		if t == nil {
			return nil, fmt.Errorf("%w: tang pin without clevis.tang", ErrMalformed)
		}
		n.URL, n.Kid = t.URL, j.header.Kid
		if j.header.Epk != nil {
			n.Curve = j.header.Epk.Crv
		}
		adv, err := tang.AdvertisementFromPayload(t.Adv)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		n.Thumbprints = adv.SigningThumbprints()
	case "sss":
		s := j.header.Clevis.SSS
		if s == nil {
			return nil, fmt.Errorf("%w: sss pin without clevis.sss", ErrMalformed)
		}
		n.Threshold = s.T
		for i, child := range s.JWE {
			c, err := Inspect([]byte(child))
			if err != nil {
				return nil, fmt.Errorf("sss share %d: %w", i+1, err)
			}
			n.Shares = append(n.Shares, c)
		}
	}
	return n, nil
}

// Format writes n as an indented tree, one pin per block. Every field
// comes from the JWE, which anyone may have written: escaped.
func (n *Node) Format(w io.Writer) { n.format(w, 0) }

func (n *Node) format(w io.Writer, depth int) {
	in := strings.Repeat("  ", depth)
	p := tang.Printable
	switch n.Pin {
	case "tang":
		fmt.Fprintf(w, "%stang %s\n", in, p(n.URL))
		fmt.Fprintf(w, "%s  kid: %s\n", in, p(n.Kid))
		if n.Curve != "" {
			fmt.Fprintf(w, "%s  curve: %s\n", in, p(n.Curve))
		}
		for _, thp := range n.Thumbprints {
			fmt.Fprintf(w, "%s  signing key thp: %s\n", in, p(thp))
		}
	case "sss":
		fmt.Fprintf(w, "%ssss: %d of %d\n", in, n.Threshold, len(n.Shares))
		for _, c := range n.Shares {
			c.format(w, depth+1)
		}
	default:
		fmt.Fprintf(w, "%s%s (not supported by sealproxy)\n", in, p(n.Pin))
	}
}
