package testenv

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Needle is a secret a memory scan looks for, by a name that may be
// printed (the bytes never are).
type Needle struct {
	Name  string
	Bytes []byte
}

// ScanMemory reads every readable mapping of process pid through
// /proc/PID/mem and counts each needle in it; with where, it logs the
// mappings where each was found. It returns the counts by name and the
// bytes scanned. Reading a non-dumpable process needs CAP_SYS_PTRACE.
func ScanMemory(t testing.TB, pid int, ns []Needle, where bool) (map[string]int, int64) {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("reading maps: %v", err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatalf("opening /proc/%d/mem: %v (a non-dumpable process needs CAP_SYS_PTRACE)", pid, err)
	}
	defer mem.Close()
	counts := map[string]int{}
	var scanned int64
	for line := range strings.Lines(string(maps)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		if len(f) >= 6 && (f[5] == "[vvar]" || f[5] == "[vvar_vclock]" || f[5] == "[vsyscall]") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad maps line %q", line)
		}
		buf := make([]byte, end-start)
		n, _ := mem.ReadAt(buf, int64(start))
		buf = buf[:n]
		scanned += int64(n)
		for _, nd := range ns {
			if c := bytes.Count(buf, nd.Bytes); c > 0 {
				counts[nd.Name] += c
				if where {
					t.Logf("%s found %d× in %s %s", nd.Name, c, f[0], strings.Join(f[5:], " "))
				}
			}
		}
	}
	return counts, scanned
}
