package config

import (
	"strconv"
	"strings"
)

// locator maps key paths to the line that defines them. The TOML decoder
// reports positions only for syntax errors, so unknown keys and semantic
// errors are placed with this light scan of the source: table headers,
// arrays of tables and "key =" lines. It only serves error messages; when
// it cannot place a key the error is printed without a line.
type locator struct {
	entries []locEntry
}

type locEntry struct {
	indexed string // listener[1].tls.min_version
	plain   string // listener.tls.min_version
	line    int
}

func locate(data []byte) *locator {
	l := &locator{}
	arrayIdx := map[string]int{} // plain path of an array of tables → current index
	var table []string           // current table, plain segments
	var inString string          // open multi-line string delimiter
	depth := 0                   // open brackets of a multi-line value
	indexed := func(segs []string) (string, string) {
		var ib, pb strings.Builder
		for i, s := range segs {
			if i > 0 {
				ib.WriteByte('.')
				pb.WriteByte('.')
			}
			ib.WriteString(s)
			pb.WriteString(s)
			if n, ok := arrayIdx[pb.String()]; ok {
				ib.WriteString("[" + strconv.Itoa(n) + "]")
			}
		}
		return ib.String(), pb.String()
	}
	for i, raw := range strings.Split(string(data), "\n") {
		lineNo := i + 1
		line := strings.TrimSpace(raw)
		if inString != "" {
			if strings.Count(line, inString)%2 == 1 {
				inString = ""
			}
			continue
		}
		if depth > 0 {
			depth += bracketDelta(line)
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[[") {
			end := strings.Index(line, "]]")
			if end < 0 {
				continue
			}
			segs := splitKey(line[2:end])
			_, plain := indexed(segs)
			if n, ok := arrayIdx[plain]; ok {
				arrayIdx[plain] = n + 1
			} else {
				arrayIdx[plain] = 0
			}
			table = segs
			ix, px := indexed(segs)
			l.entries = append(l.entries, locEntry{ix, px, lineNo})
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				continue
			}
			table = splitKey(line[1:end])
			ix, px := indexed(table)
			l.entries = append(l.entries, locEntry{ix, px, lineNo})
			continue
		}
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			continue
		}
		segs := append(append([]string(nil), table...), splitKey(line[:eq])...)
		ix, px := indexed(segs)
		l.entries = append(l.entries, locEntry{ix, px, lineNo})
		value := strings.TrimSpace(line[eq+1:])
		for _, delim := range []string{`"""`, `'''`} {
			if strings.Count(value, delim)%2 == 1 {
				inString = delim
			}
		}
		if inString == "" {
			depth = bracketDelta(value)
			if depth < 0 {
				depth = 0
			}
		}
	}
	return l
}

// bracketDelta counts [ minus ] outside strings and comments.
func bracketDelta(s string) int {
	d := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#':
			return d
		case c == '[':
			d++
		case c == ']':
			d--
		}
	}
	return d
}

func splitKey(s string) []string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return parts
}

// line returns the line of an indexed path, or of its nearest located
// parent; 0 if none is known.
func (l *locator) line(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		for _, e := range l.entries {
			if e.indexed == p {
				return e.line
			}
		}
	}
	return 0
}

// find places an unindexed key path (as the decoder reports undecoded
// keys): the first entry with that path, its indexed form and line.
func (l *locator) find(plain string) (string, int) {
	for _, e := range l.entries {
		if e.plain == plain {
			return e.indexed, e.line
		}
	}
	return plain, 0
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// indexed returns the indexed form of an unindexed path defined at line
// (or the path itself when the line holds no such key).
func (l *locator) indexed(plain string, line int) string {
	for _, e := range l.entries {
		if e.plain == plain && e.line == line {
			return e.indexed
		}
	}
	return plain
}
