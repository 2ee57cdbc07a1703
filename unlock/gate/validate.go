package gate

import (
	"fmt"
	"net/url"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// MinWebhookSecret is the shortest webhook signing secret accepted, in
// bytes: an HMAC-SHA256 key shorter than its output weakens it.
const MinWebhookSecret = 32

// ConfigError is a setting of Config that cannot be served. Setting names
// it as sealgate's flags and configuration keys do ("hold",
// "upstream"); Hint, when not empty, says how to fix it.
type ConfigError struct {
	Setting string
	Problem string // what is wrong, after the setting's name
	Err     error  // or the check that failed, when another package made it
	Hint    string
}

func (e *ConfigError) Error() string {
	if e.Err != nil {
		return "--" + e.Setting + ": " + e.Err.Error()
	}
	return "--" + e.Setting + " " + e.Problem
}

func (e *ConfigError) Unwrap() error { return e.Err }

// Validate checks a Config filled from an operator's settings, where
// every bound is explicit: New takes a zero Hold or Approvers as the
// default, Validate refuses them as a setting nobody meant. The first
// setting at fault is returned as a *ConfigError.
func (c *Config) Validate() error {
	if c.Hold <= 0 {
		return &ConfigError{Setting: "hold", Problem: "must be positive",
			Hint: fmt.Sprintf("a recovery is held this long before the host hears 'pending'; the default is %s", DefaultHold)}
	}
	if c.Approvers < 1 {
		return &ConfigError{Setting: "approvers", Problem: "must be at least 1",
			Hint: "the number of distinct operators who must approve each request: 1, or 2 for two-person approval"}
	}
	if c.Upstream != "" {
		if _, err := tang.BaseURL(c.Upstream); err != nil {
			return &ConfigError{Setting: "upstream", Err: err, Hint: "the Tang server the gate stands in front of, for example http://127.0.0.1:7501"}
		}
	}
	if c.Webhook != nil {
		if u, err := url.Parse(c.Webhook.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &ConfigError{Setting: "webhook", Problem: "must be an http:// or https:// URL"}
		}
		if n := len(c.Webhook.Secret); n > 0 && n < MinWebhookSecret {
			return &ConfigError{Setting: "webhook-secret-file", Problem: fmt.Sprintf("holds a secret of %d bytes, fewer than %d", n, MinWebhookSecret),
				Hint: "make one with: head -c 32 /dev/urandom | base64"}
		}
	}
	return nil
}
