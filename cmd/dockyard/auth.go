package main

import (
	"crypto"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/config"
)

// buildAuth makes the auth service of the configuration, or nil when auth is off.
func buildAuth(cfg *config.Config, store *cache.Store, log *slog.Logger) (*auth.Service, error) {
	a := cfg.Auth
	if a.Mode == "none" {
		return nil, nil
	}
	ac := auth.Config{Mode: auth.Mode(a.Mode), Tokens: tokenStore(store), SharedTokens: store.Shared(), Logger: log,
		TokenTTL: a.Token.TTL, RefreshTTL: a.Token.RefreshTTL,
		RateLimit: auth.RateLimit{Failures: a.RateLimit.Failures, Window: a.RateLimit.Window, Lockout: a.RateLimit.Lockout}}
	if a.UsersFile != "" {
		u, err := auth.NewUsersFile(a.UsersFile)
		if err != nil {
			return nil, err
		}
		ac.UsersFile = u
	}
	if l := a.LDAP; l.URL != "" {
		password, err := secret(l.BindPasswordFile, l.BindPasswordEnv)
		if err != nil {
			return nil, err
		}
		ac.LDAP, err = auth.NewLDAP(auth.LDAPConfig{
			URL: l.URL, StartTLS: l.StartTLS, InsecureSkipVerify: l.InsecureSkipVerify, CAFile: l.CAFile,
			BindDN: l.BindDN, BindPassword: password, UserBase: l.UserBase, UserFilter: l.UserFilter, UsernameAttr: l.UsernameAttr,
			GroupBase: l.GroupBase, GroupFilter: l.GroupFilter, GroupNameAttr: l.GroupNameAttr,
			MemberOfAttr: l.MemberOfAttr, Nested: l.Nested, Timeout: l.Timeout, PoolSize: l.PoolSize, CacheTTL: l.CacheTTL,
		}, log)
		if err != nil {
			return nil, err
		}
	}
	for _, r := range a.Rules {
		rule := auth.Rule{Subjects: r.Subjects, Grant: auth.Grant{Registries: r.Registries, Repositories: r.Repositories}}
		for _, act := range r.Actions {
			rule.Actions = append(rule.Actions, auth.Action(act))
		}
		ac.Rules = append(ac.Rules, rule)
	}
	if ac.Mode == auth.ModeToken {
		key, err := signingKey(cfg, store)
		if err != nil {
			return nil, err
		}
		if ac.Signer, err = auth.NewSigner(key, a.Token.Issuer); err != nil {
			return nil, err
		}
	}
	return auth.NewService(ac)
}

// signingKey is the token signing key: auth.token.key_file; without one, a key made
// once and kept in the data directory, or, when instances share the index, in the
// index, so that a token issued by one instance is accepted by all.
func signingKey(cfg *config.Config, store *cache.Store) (crypto.Signer, error) {
	if cfg.Auth.Token.KeyFile != "" {
		return auth.LoadOrCreateKey(cfg.Auth.Token.KeyFile, false)
	}
	if !store.Shared() {
		return auth.LoadOrCreateKey(cfg.DefaultTokenKeyFile(), true)
	}
	fresh, err := auth.NewKeyPEM()
	if err != nil {
		return nil, err
	}
	b, err := store.SecretRecords().GetOrPut("token-key", fresh)
	if err != nil {
		return nil, fmt.Errorf("token signing key in the index: %w", err)
	}
	return auth.ParseKey(b, "the index's token signing key")
}

// tokenStore keeps CI tokens and revocations in the index.
func tokenStore(store *cache.Store) auth.TokenStore {
	return auth.NewTokenStore(store.CITokenRecords(), store.RevocationRecords())
}

// reloadingCert serves a certificate read from files, re-reading them when they change
// (checked at most every few seconds), so certificates can be renewed in place.
type reloadingCert struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

func newReloadingCert(certFile, keyFile string, log *slog.Logger) (*reloadingCert, error) {
	r := &reloadingCert{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reloadingCert) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert, r.modTime = &cert, latestModTime(r.certFile, r.keyFile)
	return nil
}

func latestModTime(files ...string) time.Time {
	var t time.Time
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

func (r *reloadingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) > 2*time.Second {
		r.checked = time.Now()
		if latestModTime(r.certFile, r.keyFile).After(r.modTime) {
			if err := r.load(); err != nil {
				r.log.Error("TLS certificate not reloaded; keeping the previous one", "err", err)
			} else {
				r.log.Info("TLS certificate reloaded", "file", r.certFile)
			}
		}
	}
	return r.cert, nil
}
