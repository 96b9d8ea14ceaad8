package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/config"
)

const tokenUsage = `dockyard token create --user USER --scope REGISTRY/GLOB:ACTIONS [--scope …] [--group G …] [--expires 30d]
dockyard token list
dockyard token revoke ID
dockyard token revoke --user USER   (every CI token of USER, and every bearer and refresh token issued to USER so far)
(all take --config FILE and --data DIR; they open the index, so run them while the server is stopped)`

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// tokenCommand manages CI tokens: long-lived secrets that work as passwords.
func tokenCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(tokenUsage)
	}
	fs := flag.NewFlagSet("token "+args[0], flag.ContinueOnError)
	path := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory, overrides the configuration")
	user := fs.String("user", "", "the user the token acts as")
	expires := fs.String("expires", "90d", "lifetime (e.g. 30d, 12h; 0 for never)")
	var scopes, groups multiFlag
	fs.Var(&scopes, "scope", "REGISTRY/REPOSITORY-GLOB:ACTIONS, e.g. dev/team/**:pull,push (repeatable)")
	fs.Var(&groups, "group", "a group the user belongs to, for group rules (repeatable)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	_, index, err := openOffline(*path, *data)
	if err != nil {
		return err
	}
	defer index.Close()
	store := tokenStore(index)
	switch args[0] {
	case "create":
		if *user == "" || len(scopes) == 0 {
			return errors.New("token create needs --user and at least one --scope")
		}
		var grants []auth.Grant
		for _, s := range scopes {
			g, err := auth.ParseScope(s)
			if err != nil {
				return err
			}
			grants = append(grants, g)
		}
		ttl, err := lifetime(*expires)
		if err != nil {
			return err
		}
		secret, t, err := auth.CreateCIToken(store, *user, groups, grants, ttl)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", secret)
		fmt.Fprintf(stdout, "# id %s for %s; the secret is shown only once. Use it as the password of docker login -u %s.\n", t.ID, t.User, t.User)
		return nil
	case "list":
		tokens, err := store.ListCITokens()
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tUSER\tSCOPES\tCREATED\tEXPIRES\tSTATE")
		for _, t := range tokens {
			state := "active"
			if t.Revoked {
				state = "revoked"
			} else if !t.ExpiresAt.IsZero() && time.Now().After(t.ExpiresAt) {
				state = "expired"
			}
			exp := "never"
			if !t.ExpiresAt.IsZero() {
				exp = t.ExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.User, scopeString(t.Scopes), t.CreatedAt.Format(time.RFC3339), exp, state)
		}
		return w.Flush()
	case "revoke":
		if *user != "" {
			if err := store.PutRevocation(*user, time.Now()); err != nil {
				return err
			}
			n, err := auth.RevokeUserCITokens(store, *user)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "revoked %d CI tokens of %s; bearer and refresh tokens issued to %s before now are refused\n", n, *user, *user)
			return nil
		}
		if fs.NArg() != 1 {
			return errors.New("token revoke needs the token id, or --user")
		}
		if err := auth.RevokeCIToken(store, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s\n", fs.Arg(0))
		return nil
	}
	return errors.New(tokenUsage)
}

func scopeString(gs []auth.Grant) string {
	var parts []string
	for _, g := range gs {
		var acts []string
		for _, a := range g.Actions {
			acts = append(acts, string(a))
		}
		parts = append(parts, strings.Join(g.Registries, ",")+"/"+strings.Join(g.Repositories, ",")+":"+strings.Join(acts, ","))
	}
	return strings.Join(parts, " ")
}

// lifetime reads --expires: a duration or days, "0" for never.
func lifetime(s string) (time.Duration, error) {
	if s == "0" || s == "" {
		return 0, nil
	}
	return config.ParseDuration(s)
}
