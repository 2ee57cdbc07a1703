package keyref

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

var pkcs11Scheme = Scheme{
	Name: SchemePKCS11, Form: "pkcs11:...",
	Parse: func(v string) (any, error) { return ParsePKCS11URI(v) },
	Show:  func(p any) string { return p.(*PKCS11URI).String() },
	Needs: func(p any, resolve func(string) string) (files, trees []string) { return p.(*PKCS11URI).needs(resolve) },
	Unlocks: func(p any) bool {
		_, ok := p.(*PKCS11URI).SealedPIN()
		return ok
	},
}

// PKCS11URI is a parsed RFC 7512 PKCS#11 URI naming one private key:
//
//	pkcs11:token=LABEL;object=LABEL;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/sealproxy/pin
//
// Path attributes select the token (token, serial, slot-id) and the key
// (object, id; type=private is the only type accepted). Query attributes
// say how to reach it: module-path (required here), and the PIN from
// pin-source=file:PATH, pin-source=sealed:PATH (a JWE made by seal
// encrypt, recovered like a sealed key) or, discouraged, pin-value.
// String, GoString and
// LogValue never show a pin-value.
type PKCS11URI struct {
	Token  string // token label
	Serial string // token serial number
	SlotID *int   // slot-id
	Object string // key label (CKA_LABEL)
	ID     []byte // key id (CKA_ID)

	ModulePath string
	PinSource  string // pin-source: file:PATH, or sealed:PATH (a PIN sealed with seal encrypt)

	pinValue []byte // pin-value; never printed
	hasPin   bool
}

// ParsePKCS11URI parses s, with or without its "pkcs11:" prefix. Errors
// name the offending attribute but never echo values, so a PIN cannot leak
// through them.
func ParsePKCS11URI(s string) (*PKCS11URI, error) {
	s = strings.TrimPrefix(s, SchemePKCS11+":")
	path, query, _ := strings.Cut(s, "?")
	u := &PKCS11URI{}
	seen := map[string]bool{}
	for _, part := range splitNonEmpty(path, ";") {
		name, raw, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%w: pkcs11 path attribute %q has no value", ErrBadRef, safeName(name))
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: pkcs11 attribute %q given twice", ErrBadRef, safeName(name))
		}
		seen[name] = true
		v, err := pctDecode(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: pkcs11 attribute %q: %v", ErrBadRef, safeName(name), err)
		}
		switch name {
		case "token":
			u.Token = string(v)
		case "serial":
			u.Serial = string(v)
		case "object":
			u.Object = string(v)
		case "id":
			u.ID = v
		case "slot-id":
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%w: pkcs11 slot-id is not a number", ErrBadRef)
			}
			u.SlotID = &n
		case "type":
			if string(v) != "private" {
				return nil, fmt.Errorf("%w: pkcs11 type must be private (the key, not its certificate)", ErrBadRef)
			}
		case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer":
			// Valid RFC 7512 attributes that this backend does not select on.
		default:
			if !strings.HasPrefix(name, "x-") {
				return nil, fmt.Errorf("%w: unknown pkcs11 path attribute %q", ErrBadRef, safeName(name))
			}
		}
	}
	for _, part := range splitNonEmpty(query, "&") {
		name, raw, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%w: pkcs11 query attribute %q has no value", ErrBadRef, safeName(name))
		}
		if seen["?"+name] {
			return nil, fmt.Errorf("%w: pkcs11 attribute %q given twice", ErrBadRef, safeName(name))
		}
		seen["?"+name] = true
		v, err := pctDecode(raw)
		if err != nil {
			if name == "pin-value" {
				return nil, fmt.Errorf("%w: pkcs11 pin-value is not validly percent-encoded", ErrBadRef)
			}
			return nil, fmt.Errorf("%w: pkcs11 attribute %q: %v", ErrBadRef, safeName(name), err)
		}
		switch name {
		case "module-path":
			u.ModulePath = string(v)
		case "pin-source":
			u.PinSource = string(v)
		case "pin-value":
			u.pinValue, u.hasPin = v, true
		case "module-name":
			return nil, fmt.Errorf("%w: pkcs11 module-name is not supported: give module-path", ErrBadRef)
		default:
			if !strings.HasPrefix(name, "x-") {
				return nil, fmt.Errorf("%w: unknown pkcs11 query attribute %q", ErrBadRef, safeName(name))
			}
		}
	}
	if u.Token == "" && u.Serial == "" && u.SlotID == nil {
		return nil, fmt.Errorf("%w: pkcs11 reference selects no token (give token, serial or slot-id)", ErrBadRef)
	}
	if u.Object == "" && len(u.ID) == 0 {
		return nil, fmt.Errorf("%w: pkcs11 reference selects no key (give object or id)", ErrBadRef)
	}
	if u.PinSource != "" && u.hasPin {
		return nil, fmt.Errorf("%w: pkcs11 reference has both pin-source and pin-value", ErrBadRef)
	}
	if u.PinSource != "" {
		_, file := u.pinFile()
		_, sealed := u.SealedPIN()
		if !file && !sealed {
			return nil, fmt.Errorf("%w: pkcs11 pin-source must be file:PATH or sealed:PATH", ErrBadRef)
		}
	}
	return u, nil
}

func splitNonEmpty(s, sep string) []string {
	var out []string
	for p := range strings.SplitSeq(s, sep) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// safeName limits what an error echoes of an attribute name: a malformed
// reference might carry a PIN where a name should be.
func safeName(s string) string {
	if len(s) > 24 || strings.ContainsAny(s, "%=") {
		return "…"
	}
	for _, r := range s {
		if !(r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return "…"
		}
	}
	return s
}

func pctDecode(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(s) {
			return nil, fmt.Errorf("truncated %%-escape")
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("bad %%-escape")
		}
		out = append(out, byte(n))
		i += 2
	}
	return out, nil
}

// pctEncode escapes everything but RFC 3986 unreserved characters and,
// in query values, '/' and ':' (so module paths stay readable).
func pctEncode(b []byte, query bool) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
			sb.WriteByte(c)
		case query && (c == '/' || c == ':'):
			sb.WriteByte(c)
		default:
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// pctEncodeAll escapes every byte (for id, which is binary).
func pctEncodeAll(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "%%%02X", c)
	}
	return sb.String()
}

// String returns the URI with any pin-value replaced by REDACTED.
func (u *PKCS11URI) String() string {
	var path []string
	if u.Token != "" {
		path = append(path, "token="+pctEncode([]byte(u.Token), false))
	}
	if u.Serial != "" {
		path = append(path, "serial="+pctEncode([]byte(u.Serial), false))
	}
	if u.SlotID != nil {
		path = append(path, "slot-id="+strconv.Itoa(*u.SlotID))
	}
	if u.Object != "" {
		path = append(path, "object="+pctEncode([]byte(u.Object), false))
	}
	if len(u.ID) > 0 {
		path = append(path, "id="+pctEncodeAll(u.ID))
	}
	var query []string
	if u.ModulePath != "" {
		query = append(query, "module-path="+pctEncode([]byte(u.ModulePath), true))
	}
	if u.PinSource != "" {
		query = append(query, "pin-source="+pctEncode([]byte(u.PinSource), true))
	}
	if u.hasPin {
		query = append(query, "pin-value=REDACTED")
	}
	s := Format(SchemePKCS11, strings.Join(path, ";"))
	if len(query) > 0 {
		s += "?" + strings.Join(query, "&")
	}
	return s
}

// GoString is String, so %#v cannot print the PIN either.
func (u *PKCS11URI) GoString() string { return u.String() }

// LogValue logs the redacted form.
func (u *PKCS11URI) LogValue() slog.Value { return slog.StringValue(u.String()) }

// PIN returns the PIN from pin-value or the pin-source file (its first
// line, the file read by read: this package only parses), or nil when
// the reference gives none. The caller wipes it. A sealed PIN
// (SealedPIN) is recovered by the vault, not here.
func (u *PKCS11URI) PIN(read func(path string) ([]byte, error)) ([]byte, error) {
	if u.hasPin {
		return bytes.Clone(u.pinValue), nil
	}
	if u.PinSource == "" {
		return nil, nil
	}
	path, ok := u.pinFile()
	if !ok {
		return nil, fmt.Errorf("pin-source must be file:PATH here (a sealed PIN is recovered through unlock)")
	}
	data, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("reading pin-source: %w", err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	pin := bytes.Clone(bytes.TrimRight(line, "\r"))
	clear(data)
	return pin, nil
}

// pinFile is the path of a pin-source=file:PATH (file:///x as well as
// file:/x).
func (u *PKCS11URI) pinFile() (string, bool) {
	path, ok := strings.CutPrefix(u.PinSource, SchemeFile+":")
	path = strings.TrimPrefix(path, "//")
	return path, ok && path != ""
}

// SealedPIN is the path of a pin-source=sealed:PATH: a PIN sealed with
// `seal encrypt`, recovered through Tang (and any gate) in the same
// approval request group as the sealed keys.
func (u *PKCS11URI) SealedPIN() (string, bool) {
	path, ok := strings.CutPrefix(u.PinSource, SchemeSealed+":")
	return path, ok && path != ""
}

// libDirs hold the shared libraries a PKCS#11 module loads: a reload
// may load a module again (or another one) after its keys were closed.
var libDirs = []string{"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"}

// needs is what a pkcs11: key needs to be opened again: the module, the
// library directories, the pin-source file and, for SoftHSM, its
// configuration file and token directory (read when it looks keys up;
// finding and signing write nothing, TestSandboxedPKCS11).
func (u *PKCS11URI) needs(resolve func(string) string) (files, trees []string) {
	if u.ModulePath == "" {
		return nil, nil
	}
	files = append(files, resolve(u.ModulePath))
	trees = append(trees, libDirs...)
	if pin, ok := u.pinFile(); ok {
		files = append(files, resolve(pin))
	}
	if pin, ok := u.SealedPIN(); ok {
		files = append(files, resolve(pin))
	}
	if strings.Contains(strings.ToLower(filepath.Base(u.ModulePath)), "softhsm") {
		conf := os.Getenv("SOFTHSM2_CONF")
		if conf == "" {
			conf = "/etc/softhsm/softhsm2.conf"
		}
		trees = append(trees, conf)
		if dir := softhsmTokenDir(conf); dir != "" {
			trees = append(trees, dir)
		}
	}
	return files, trees
}

// softhsmTokenDir reads directories.tokendir from a SoftHSM2
// configuration file; "" if it cannot.
func softhsmTokenDir(conf string) string {
	f, err := os.Open(conf)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), "=")
		if ok && strings.TrimSpace(k) == "directories.tokendir" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
