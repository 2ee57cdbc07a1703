package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/awnumar/memguard"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/unlock"
)

// ticketSecretSize is vault.TicketSecretSize (a 256-bit HKDF input key);
// seal does not link the vault for one constant.
const ticketSecretSize = 32

// ticketSecret is `seal ticket-secret PIN CONFIG`: a random 32-byte
// session-ticket secret for [tickets], made in locked memory and written
// only sealed. Every instance of a fleet is given the same file.
func ticketSecret(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("seal ticket-secret", flag.ContinueOnError)
	var f ioFlags
	fs.StringVar(&f.out, "o", "", "write the sealed secret to `FILE` instead of standard output")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up after this `duration`")
	var tofu bool
	fs.BoolVar(&tofu, "y", false, "trust a Tang advertisement without a pinned thumbprint")
	fs.BoolVar(&tofu, "trust-on-first-use", false, "same as -y")
	// -i is taken only to say why it is refused.
	in := fs.String("i", "", "refused: the secret is made here, never read")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if *in != "" {
		return cli.WithHint(errors.New("ticket-secret makes its secret itself and reads no input"), cli.ExitUsage,
			"to seal a secret of your own, use 'seal encrypt' (a ticket secret is 32 random bytes)")
	}
	if len(pos) != 2 {
		return cli.WithHint(errors.New("ticket-secret takes a pin and its configuration"), cli.ExitUsage,
			`seal ticket-secret tang '{"url":"http://tang:7500","thp":"..."}' -o tickets.jwe`)
	}
	secret, err := memguard.NewBufferFromReader(rand.Reader, ticketSecretSize)
	if err != nil {
		return fmt.Errorf("making the ticket secret: %w", err)
	}
	defer secret.Destroy()
	if secret.Size() != ticketSecretSize {
		return fmt.Errorf("making the ticket secret: %d random bytes, want %d", secret.Size(), ticketSecretSize)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	jwe, err := unlock.Encrypt(ctx, pos[0], []byte(pos[1]), secret.Bytes(), &unlock.Options{TrustOnFirstUse: tofu})
	if err != nil {
		return explain(err)
	}
	return f.output(stdout, jwe)
}
