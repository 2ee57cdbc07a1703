package gate

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config { return Config{Hold: time.Second, Approvers: 1} }
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		setting string // "" when valid
		text    string
	}{
		{"defaults", func(*Config) {}, "", ""},
		{"upstream", func(c *Config) { c.Upstream = "http://127.0.0.1:7501/" }, "", ""},
		{"signed webhook", func(c *Config) {
			c.Webhook = &Webhook{URL: "https://hooks.example/x", Secret: make([]byte, MinWebhookSecret)}
		}, "", ""},
		{"zero hold", func(c *Config) { c.Hold = 0 }, "hold", "--hold must be positive"},
		{"negative hold", func(c *Config) { c.Hold = -time.Second }, "hold", "--hold must be positive"},
		{"no approvers", func(c *Config) { c.Approvers = 0 }, "approvers", "--approvers must be at least 1"},
		{"upstream without scheme", func(c *Config) { c.Upstream = "tang:7500" }, "upstream", `--upstream: tang URL "tang:7500" must look like http://host:port`},
		{"upstream password masked", func(c *Config) { c.Upstream = "ftp://u:hunter2@tang:7500" }, "upstream", "--upstream: "},
		{"webhook ftp", func(c *Config) { c.Webhook = &Webhook{URL: "ftp://x"} }, "webhook", "--webhook must be an http:// or https:// URL"},
		{"webhook no host", func(c *Config) { c.Webhook = &Webhook{URL: "https:///x"} }, "webhook", "--webhook must be an http:// or https:// URL"},
		{"short secret", func(c *Config) {
			c.Webhook = &Webhook{URL: "https://hooks.example/x", Secret: []byte("tooshort")}
		}, "webhook-secret-file", "--webhook-secret-file holds a secret of 8 bytes, fewer than 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			if tc.setting == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate() = %v, want a *ConfigError", err)
			}
			if ce.Setting != tc.setting {
				t.Errorf("setting %q, want %q", ce.Setting, tc.setting)
			}
			if !strings.HasPrefix(err.Error(), tc.text) {
				t.Errorf("error %q, want it to start %q", err, tc.text)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(ce.Hint, "hunter2") || strings.Contains(err.Error(), "tooshort") {
				t.Errorf("error %q (hint %q) quotes a secret", err, ce.Hint)
			}
		})
	}
}
