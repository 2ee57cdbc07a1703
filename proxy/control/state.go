package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/sealproxy/sealproxy/internal/atomicfile"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// ErrConflict reports a configuration that contradicts the state file:
// the reload (or start) is refused, naming both.
var ErrConflict = errors.New("the configuration conflicts with the control API's state file")

// State is what the control API changed: the contents of [admin]
// state_file. It holds key references and certificate paths, never key
// bytes.
type State struct {
	Version   int             `json:"version"`
	Keys      []KeyEntry      `json:"keys,omitempty"`
	Listeners []ListenerEntry `json:"listeners,omitempty"`
}

// KeyEntry is a key added or replaced by `ctl commit`.
type KeyEntry struct {
	Name   string `json:"name"`
	Cert   string `json:"cert"`
	Source string `json:"source"`
	// Replaces is the configuration's [[key]] as it was when the API
	// replaced it; nil for a key the configuration does not define.
	Replaces *KeyRef `json:"replaces,omitempty"`
}

// KeyRef is a [[key]]'s certificate and source.
type KeyRef struct {
	Cert   string `json:"cert"`
	Source string `json:"source"`
}

// ListenerEntry is a listener whose keys `ctl attach`/`detach` set.
type ListenerEntry struct {
	Name string   `json:"name"`
	Keys []string `json:"keys"`
	// Was is the configuration's list when the API first changed it.
	Was []string `json:"was"`
}

const stateVersion = 1

// maxState bounds the state file read.
const maxState = 1 << 20

// ParseState decodes a state file: strict (unknown fields are errors),
// and every reference must parse.
func ParseState(data []byte) (*State, error) {
	if len(data) > maxState {
		return nil, fmt.Errorf("larger than %d bytes", maxState)
	}
	st := &State{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the state")
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	seen := map[string]bool{}
	for _, k := range st.Keys {
		if err := checkName(k.Name); err != nil {
			return nil, err
		}
		if seen[k.Name] {
			return nil, fmt.Errorf("key %q listed twice", k.Name)
		}
		seen[k.Name] = true
		if k.Cert == "" {
			return nil, fmt.Errorf("key %q: no cert", k.Name)
		}
		if _, err := keyref.Parse(k.Source); err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Name, err)
		}
	}
	seenL := map[string]bool{}
	for _, l := range st.Listeners {
		if l.Name == "" || seenL[l.Name] {
			return nil, fmt.Errorf("listener %q empty or listed twice", l.Name)
		}
		seenL[l.Name] = true
		if len(l.Keys) == 0 {
			return nil, fmt.Errorf("listener %q: no keys", l.Name)
		}
	}
	return st, nil
}

// readState reads path; a missing file is an empty state.
func readState(path string) (*State, []byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{Version: stateVersion}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("state file: %w", err)
	}
	st, err := ParseState(data)
	if err != nil {
		return nil, nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return st, data, nil
}

func (st *State) encode() []byte {
	data, _ := json.MarshalIndent(st, "", "  ")
	return append(data, '\n')
}

func (st *State) clone() *State {
	c := &State{Version: stateVersion}
	for _, k := range st.Keys {
		if k.Replaces != nil {
			r := *k.Replaces
			k.Replaces = &r
		}
		c.Keys = append(c.Keys, k)
	}
	for _, l := range st.Listeners {
		l.Keys, l.Was = slices.Clone(l.Keys), slices.Clone(l.Was)
		c.Listeners = append(c.Listeners, l)
	}
	return c
}

func (st *State) key(name string) *KeyEntry {
	for i := range st.Keys {
		if st.Keys[i].Name == name {
			return &st.Keys[i]
		}
	}
	return nil
}

func (st *State) listener(name string) *ListenerEntry {
	for i := range st.Listeners {
		if st.Listeners[i].Name == name {
			return &st.Listeners[i]
		}
	}
	return nil
}

// writeFile replaces path atomically with data, mode 0600: a temporary
// file in the same directory, synced, renamed over path, and the
// directory synced, so that a crash leaves the old file or the new one.
func writeFile(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	return nil
}

// apply returns base with st's changes: a copy, base is left alone. A
// change that the configuration contradicts (it now defines a key the
// API added, or changed a key or a listener's keys the API changed) is
// an ErrConflict naming the configuration's file:line and stateName.
func apply(base *config.Config, st *State, stateName string) (*config.Config, error) {
	cfg := *base
	cfg.Keys = slices.Clone(base.Keys)
	cfg.Listeners = slices.Clone(base.Listeners)
	for i := range cfg.Listeners {
		cfg.Listeners[i].Keys = slices.Clone(cfg.Listeners[i].Keys)
	}
	conflict := func(where, what string) error {
		return fmt.Errorf("%w: %s: %s, which the state file %s (written by sealproxy ctl) changes too", ErrConflict, where, what, stateName)
	}
	for _, e := range st.Keys {
		k := &config.Key{Name: e.Name, Cert: e.Cert, Source: e.Source}
		i := slices.IndexFunc(cfg.Keys, func(c config.Key) bool { return c.Name == e.Name })
		if i < 0 {
			if e.Replaces != nil {
				return nil, conflict(base.Path, fmt.Sprintf("[[key]] %q is gone", e.Name))
			}
			cfg.Keys = append(cfg.Keys, *k)
			continue
		}
		have := KeyRef{Cert: cfg.Keys[i].Cert, Source: cfg.Keys[i].Source}
		switch {
		case have == KeyRef{Cert: e.Cert, Source: e.Source}:
			// The configuration says what the state says.
		case e.Replaces == nil:
			return nil, conflict(base.Where(fmt.Sprintf("key[%d]", i)), fmt.Sprintf("[[key]] %q is defined", e.Name))
		case have != *e.Replaces:
			return nil, conflict(base.Where(fmt.Sprintf("key[%d]", i)), fmt.Sprintf("[[key]] %q was changed", e.Name))
		}
		cfg.Keys[i] = *k
	}
	for _, e := range st.Listeners {
		i := slices.IndexFunc(cfg.Listeners, func(l config.Listener) bool { return l.Name == e.Name })
		if i < 0 {
			return nil, conflict(base.Path, fmt.Sprintf("[[listener]] %q is gone", e.Name))
		}
		l := &cfg.Listeners[i]
		if !slices.Equal(l.Keys, e.Keys) && !slices.Equal(l.Keys, e.Was) {
			return nil, conflict(base.Where(fmt.Sprintf("listener[%d].keys", i)), fmt.Sprintf("[[listener]] %q keys were changed", e.Name))
		}
		l.Keys = slices.Clone(e.Keys)
	}
	for i := range cfg.Listeners {
		for _, n := range cfg.Listeners[i].Keys {
			if cfg.Key(n) == nil {
				return nil, conflict(base.Where(fmt.Sprintf("listener[%d].keys", i)), fmt.Sprintf("[[listener]] %q uses key %q, which neither defines", cfg.Listeners[i].Name, n))
			}
		}
	}
	return &cfg, nil
}
