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
// signing-key thumbprints of the stored advertisements, sss thresholds. A
// pin this build lacks is described by its name alone.
func Inspect(data []byte) (*Node, error) {
	j, err := parseJWE(data)
	if err != nil {
		return nil, err
	}
	p, ok := lookup(j.header.Clevis.Pin)
	if !ok {
		return &Node{Pin: j.header.Clevis.Pin}, nil
	}
	return p.inspect(j)
}

// Format writes n as an indented tree, one pin per block. Every field
// comes from the JWE, which anyone may have written: escaped.
func (n *Node) Format(w io.Writer) { n.format(w, 0) }

func (n *Node) format(w io.Writer, depth int) {
	in := strings.Repeat("  ", depth)
	p, ok := lookup(n.Pin)
	if !ok {
		fmt.Fprintf(w, "%s%s (not supported by sealproxy)\n", in, tang.Printable(n.Pin))
		return
	}
	for _, line := range p.describe(n) {
		fmt.Fprintf(w, "%s%s\n", in, line)
	}
	for _, c := range n.Shares {
		c.format(w, depth+1)
	}
}
