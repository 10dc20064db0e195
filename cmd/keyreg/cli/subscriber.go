package cli

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func newSubscriberCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("subscriber", "Give services NATS credentials of their own",
		`A service that follows key changes over NATS (keyreg serve --nats-listen) logs in with
credentials of its own. It may read the KEYREG stream and use only its own consumers, named
NAME-1 to NAME-N (N: --max-consumers, or the server's --nats-subscriber-max-consumers), and
must connect with inbox prefix _INBOX.NAME. It can neither see nor touch keyreg's consumers
or another service's. Adding and removing are recorded as events; the log keeps only a
bcrypt hash of the password. Needs a key with keyreg.admin.`,
		`  keyreg subscriber add billing
  keyreg subscriber add billing --max-consumers 4 --creds-file ./billing.nats.env
  keyreg subscriber list
  keyreg subscriber remove billing`)
	cmd.AddCommand(newSubscriberAddCmd(g), newSubscriberListCmd(g), newSubscriberRemoveCmd(g))
	return cmd
}

func newSubscriberAddCmd(g *globals) *cobra.Command {
	var maxConsumers int
	var credsFile string
	cmd := &cobra.Command{
		Use:   "add NAME [--max-consumers N] [--creds-file FILE]",
		Short: "Add a service's NATS user; its password is shown once",
		Long: `Adds NATS user NAME (1 to 32 lowercase letters, digits or '-', starting with a letter)
with a new random password, and prints the user, the password (this once), the NATS URL,
the inbox prefix and the consumer names it may use. With --creds-file FILE it writes them
to FILE instead (created with mode 0600; it must not exist), as NATS_URL=, NATS_USER=,
NATS_PASSWORD= and NATS_INBOX_PREFIX= lines a shell can source, and prints the path.`,
		Example: `  keyreg subscriber add billing
  keyreg subscriber add billing --creds-file ./billing.nats.env
  . ./billing.nats.env && nats --inbox-prefix "$NATS_INBOX_PREFIX" consumer add KEYREG billing-1 --pull --defaults`,
		Args: cobra.ExactArgs(1),
	}
	w := addWriteFlags(cmd, false)
	cmd.Flags().IntVar(&maxConsumers, "max-consumers", 0, "how many consumers it may have (default: the server's --nats-subscriber-max-consumers)")
	cmd.Flags().StringVar(&credsFile, "creds-file", "", "write the credentials to this new `FILE` (mode 0600) instead of printing the password")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var f *os.File
		if credsFile != "" {
			var err error
			// Made before the request, so that a file that cannot be written adds no user.
			if f, err = os.OpenFile(credsFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				return fmt.Errorf("--creds-file: %w", err)
			}
		}
		s, err := g.client().AddSubscriber(cmd.Context(), args[0], maxConsumers, w.o)
		if err != nil {
			if f != nil {
				f.Close()
				os.Remove(credsFile)
			}
			return err
		}
		if f != nil {
			_, werr := fmt.Fprintf(f, "NATS_URL=%s\nNATS_USER=%s\nNATS_PASSWORD=%s\nNATS_INBOX_PREFIX=%s\n", s.NATSURL, s.NATSUser, s.Password, s.InboxPrefix)
			if err := errors.Join(werr, f.Close()); err != nil {
				return fmt.Errorf("subscriber %s was added, but its credentials could not be written to %s (remove it and add it again): %w", s.Name, credsFile, err)
			}
			s.Password = ""
		}
		if g.json {
			out := map[string]any{"subscriber": s}
			if f != nil {
				out["creds_file"] = credsFile
			}
			return g.printJSON(out)
		}
		fmt.Fprintf(g.stdout, "Added NATS subscriber %s.\n", s.Name)
		fmt.Fprintf(g.stdout, "  user:          %s\n", s.NATSUser)
		if f != nil {
			fmt.Fprintf(g.stdout, "  credentials:   %s\n", credsFile)
		} else {
			fmt.Fprintf(g.stdout, "  password:      %s   (shown this once)\n", s.Password)
		}
		fmt.Fprintf(g.stdout, "  url:           %s\n", s.NATSURL)
		fmt.Fprintf(g.stdout, "  inbox prefix:  %s\n", s.InboxPrefix)
		fmt.Fprintf(g.stdout, "  consumers:     %s\n", strings.Join(s.Consumers, ", "))
		return nil
	}
	return cmd
}

func newSubscriberListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the services' NATS users",
		Example: "  keyreg subscriber list\n  keyreg subscriber list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			subs, err := g.client().ListSubscribers(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"subscribers": subs})
			}
			return printSubscribers(g, subs)
		},
	}
}

func printSubscribers(g *globals, subs []wire.Subscriber) error {
	t := newTable(g.stdout, "NAME", "MAX CONSUMERS", "INBOX PREFIX", "ADDED", "ADDED BY")
	for _, s := range subs {
		t.row(s.Name, strconv.Itoa(s.MaxConsumers), s.InboxPrefix, fmtTime(s.AddedAt), s.AddedBy)
	}
	return t.flush()
}

func newSubscriberRemoveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "remove NAME",
		Short:   "Remove a service's NATS user: it can no longer connect",
		Example: `  keyreg subscriber remove billing --reason "service retired"`,
		Args:    cobra.ExactArgs(1),
	}
	w := addWriteFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := g.client().RemoveSubscriber(cmd.Context(), args[0], w.o); err != nil {
			return err
		}
		if g.json {
			return g.printJSON(map[string]any{"removed": args[0]})
		}
		fmt.Fprintf(g.stdout, "Removed NATS subscriber %s.\n", args[0])
		return nil
	}
	return cmd
}
