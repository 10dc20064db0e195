package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// whyInvalid explains the code of a failed verify.
func whyInvalid(code string) string {
	switch code {
	case "MALFORMED":
		return "the secret is not a keyreg secret (kr_... with a valid checksum)"
	case "NOT_FOUND":
		return "no key has this secret"
	case "REVOKED":
		return "the key is revoked"
	case "EXPIRED":
		return "the key has expired"
	case "IP_NOT_ALLOWED":
		return "the address is not in the key's IP allowlist"
	case "PERMISSION_DENIED":
		return "the key lacks the permission"
	}
	return "the key may not be used"
}

func newVerifyCmd(g *globals) *cobra.Command {
	var key, keyFile, ip, permission string
	cmd := &cobra.Command{
		Use:   "verify --ip ADDR [--permission P] [--key-file FILE]",
		Short: "Check whether a key may be used from an address for a permission",
		Long: `Asks the server whether a secret may be used from address --ip, for --permission if given,
and prints the answer's code: VALID, MALFORMED, NOT_FOUND, REVOKED, EXPIRED, IP_NOT_ALLOWED
or PERMISSION_DENIED (--json: the whole answer, with applied_seq, the stream sequence the
server's views had applied).

It needs a registry key holding keyreg.verify ($KEYREG_TOKEN or --token), and answers only
for keys of that key's workspace (keyreg.admin: every workspace): another workspace's key is
NOT_FOUND. Answers that find no key are rate-limited per --ip address (IPv6: per /64) and per
registry key; a limited lookup fails with 429 rate_limited.

The secret is read from --key-file, else from the first line of stdin. --key SECRET also
works but shows the secret to anyone who can list processes (ps): avoid it.

Exit status: 0 when the code is VALID; 1 when it is not, or on an error; 2 on bad usage.`,
		Example: `  export KEYREG_TOKEN=$(cat ./gateway.key)   # a registry key with keyreg.verify
  keyreg verify --ip 203.0.113.7 --permission users.track --key-file ./prod.key
  printf '%s\n' "$SECRET" | keyreg verify --ip 203.0.113.7
  if keyreg verify --ip "$CLIENT_IP" --key-file key.txt >/dev/null; then echo allowed; fi`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			secret := key
			if secret == "" {
				var err error
				if secret, err = g.readSecret(keyFile); err != nil {
					return err
				}
			}
			if secret == "" {
				return usagef("no key to verify: give it with --key-file FILE or on stdin")
			}
			res, err := g.client().Verify(cmd.Context(), secret, ip, permission)
			if err != nil {
				return err
			}
			if g.json {
				err = g.printJSON(res)
			} else {
				_, err = fmt.Fprintln(g.stdout, res.Code)
			}
			if err != nil || res.Valid {
				return err
			}
			return fmt.Errorf("%s: %s", res.Code, whyInvalid(res.Code))
		},
	}
	f := cmd.Flags()
	f.StringVar(&ip, "ip", "", "the address the request came from (required)")
	f.StringVar(&permission, "permission", "", "the permission the request needs (default: none checked)")
	f.StringVar(&keyFile, "key-file", "", "read the secret from this file's first line (- for stdin)")
	f.StringVar(&key, "key", "", "the secret itself: visible in ps, prefer --key-file or stdin")
	cmd.MarkFlagRequired("ip")
	cmd.MarkFlagsMutuallyExclusive("key", "key-file")
	return cmd
}

// readSecret returns the first line of file, or of stdin when file is "" or "-", trimmed.
func (g *globals) readSecret(file string) (string, error) {
	in := g.stdin
	if file != "" && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("key file: %w", err)
		}
		defer f.Close()
		in = f
	} else if f, ok := in.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(g.stderr, "Paste the secret and press Enter: ")
		}
	}
	line, err := bufio.NewReader(io.LimitReader(in, 64<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the secret: %w", err)
	}
	return strings.TrimSpace(line), nil
}
