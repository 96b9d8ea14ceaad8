package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Tokens outlive the checks that issued them: a CI token is a password that never
// expires by itself, a refresh token lasts 30 days, a bearer token minutes. Two things
// end them early: the user disappearing from every source (checked when a CI token is
// used, and at every refresh), and an operator revoking everything of a user at once.

// userCheckTTL is how long "this user exists" is remembered for CI tokens: a removed
// user's tokens stop within it.
const userCheckTTL = 30 * time.Second

// maxUserChecks bounds the remembered answers.
const maxUserChecks = 10000

// userChecks answers whether a user still exists in a configured source, briefly
// cached so that a CI client pulling a hundred layers costs one directory lookup.
type userChecks struct {
	files *UsersFile
	ldap  *LDAP
	now   func() time.Time

	mu      sync.Mutex
	answers map[string]userCheck
}

type userCheck struct {
	id    *Identity
	until time.Time
}

// lookup returns the user's current identity (source, and LDAP groups), or
// ErrUnknownUser when no source has them; ErrDirectoryUnavailable when LDAP could not
// be asked.
func (u *userChecks) lookup(ctx context.Context, user string) (*Identity, error) {
	now := u.now()
	u.mu.Lock()
	if a, ok := u.answers[user]; ok && now.Before(a.until) {
		u.mu.Unlock()
		return a.id, nil
	}
	u.mu.Unlock()
	id, err := u.ask(ctx, user)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	if len(u.answers) >= maxUserChecks {
		u.answers = map[string]userCheck{}
	}
	u.answers[user] = userCheck{id: id, until: now.Add(userCheckTTL)}
	u.mu.Unlock()
	return id, nil
}

func (u *userChecks) ask(ctx context.Context, user string) (*Identity, error) {
	if u.files != nil && u.files.Has(user) {
		return &Identity{Name: user, Source: "users-file"}, nil
	}
	if u.ldap != nil {
		return u.ldap.Lookup(ctx, user)
	}
	return nil, ErrUnknownUser
}

// forget drops what is remembered of user (after a revocation).
func (u *userChecks) forget(user string) {
	u.mu.Lock()
	delete(u.answers, user)
	u.mu.Unlock()
}

// revocations are the per-user "not before" times, in memory for the check on every
// bearer token, and in the token store so they survive restarts.
type revocations struct {
	mu     sync.RWMutex
	before map[string]time.Time
}

// Revoked reports whether a token issued to subject at issuedAt has been revoked.
func (s *Service) Revoked(subject string, issuedAt time.Time) bool {
	if s.cfg.SharedTokens && s.cfg.Tokens != nil {
		t, ok, err := s.cfg.Tokens.Revocation(subject)
		if err != nil {
			s.log.Warn("token revocations unreadable: the token is refused", "subject", subject, "err", err)
			return true
		}
		return ok && !issuedAt.After(t)
	}
	s.revoked.mu.RLock()
	defer s.revoked.mu.RUnlock()
	t, ok := s.revoked.before[subject]
	return ok && !issuedAt.After(t)
}

// ClaimsRevoked reports whether a token was revoked: its subject's tokens up to some
// time, or the CI token it was exchanged for (revoked, expired or gone; a store that
// cannot say counts as revoked).
func (s *Service) ClaimsRevoked(c *Claims) bool {
	if c.IssuedAt == nil || s.Revoked(c.Subject, c.IssuedAt.Time) {
		return true
	}
	if c.CI == "" {
		return false
	}
	if s.cfg.Tokens == nil {
		return true
	}
	t, err := s.cfg.Tokens.GetCIToken(c.CI)
	return err != nil || t == nil || t.Revoked || (!t.ExpiresAt.IsZero() && s.cfg.Now().After(t.ExpiresAt))
}

// RevokeUser ends every token of user now: their CI tokens are marked revoked, and
// bearer and refresh tokens issued to them until now are refused from now on. It
// returns how many CI tokens it revoked.
func (s *Service) RevokeUser(ctx context.Context, user string) (int, error) {
	if user == "" {
		return 0, errors.New("revoke: no user named")
	}
	if s.cfg.Tokens == nil {
		return 0, errors.New("revoke: no token store")
	}
	now := s.cfg.Now()
	if err := s.cfg.Tokens.PutRevocation(user, now); err != nil {
		return 0, err
	}
	s.revoked.mu.Lock()
	s.revoked.before[user] = now
	s.revoked.mu.Unlock()
	s.users.forget(user)
	s.mu.Lock()
	delete(s.logins, user)
	s.mu.Unlock()
	n, err := RevokeUserCITokens(s.cfg.Tokens, user)
	s.log.Warn("all tokens of a user revoked", "user", user, "ci_tokens", n, "err", err)
	return n, err
}

// RevokeUserCITokens marks every CI token of user revoked (also offline, from the
// command line) and returns how many it marked.
func RevokeUserCITokens(store TokenStore, user string) (int, error) {
	tokens, err := store.ListCITokens()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range tokens {
		if t.User != user || t.Revoked {
			continue
		}
		t.Revoked = true
		if err := store.PutCIToken(t); err != nil {
			return n, fmt.Errorf("revoke CI token %s: %w", t.ID, err)
		}
		n++
	}
	return n, nil
}
