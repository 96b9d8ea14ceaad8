package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Mode is how clients authenticate.
type Mode string

const (
	ModeNone  Mode = "none"  // no authentication: everything is allowed
	ModeBasic Mode = "basic" // HTTP Basic on every request
	ModeToken Mode = "token" // Docker token auth: Basic at the token endpoint, Bearer JWTs on the API
)

// Config assembles a Service.
type Config struct {
	Mode      Mode
	UsersFile *UsersFile
	LDAP      *LDAP
	Tokens    TokenStore // CI tokens; nil disables them
	// SharedTokens: other instances share Tokens (a PostgreSQL index), and revoke
	// tokens there; revocations are read from it on every check instead of memory.
	SharedTokens bool
	Rules        []Rule
	Signer       *Signer // token mode
	TokenTTL     time.Duration
	// RefreshTTL is the lifetime of refresh tokens (docker login keeps one).
	RefreshTTL time.Duration
	RateLimit  RateLimit
	Logger     *slog.Logger
	Now        func() time.Time
}

// RateLimit locks a (user name, client address) pair out after Failures failed
// logins within Window, for Lockout. Pairs, not users: otherwise anyone could lock a
// user out from anywhere, and behind a proxy that hides client addresses, everyone.
type RateLimit struct {
	Failures int
	Window   time.Duration
	Lockout  time.Duration
}

// ErrRateLimited means too many failed logins; RetryAfter says for how long.
type ErrRateLimited struct{ RetryAfter time.Duration }

func (e *ErrRateLimited) Error() string {
	return fmt.Sprintf("too many failed logins; retry in %s", e.RetryAfter.Round(time.Second))
}

// Close releases what the service holds open (its LDAP connections) once a reload has
// replaced it.
func (s *Service) Close() {
	if s.cfg.LDAP != nil {
		s.cfg.LDAP.Close()
	}
}

// KeepLimits carries the failed-login counts of old, the service this one replaces (a
// configuration reload), into this one: a reload must not give a password guesser a
// fresh budget. The counts are kept under this service's limits.
func (s *Service) KeepLimits(old *Service) {
	if old == nil || s == nil {
		return
	}
	old.limiter.mu.Lock()
	entries := old.limiter.entries
	old.limiter.entries = map[string]*limitEntry{} // the old service's requests count apart now
	old.limiter.mu.Unlock()
	s.limiter.mu.Lock()
	s.limiter.entries = entries
	s.limiter.mu.Unlock()
}

// Service answers the gateway's questions: who is this, and may they do that.
type Service struct {
	cfg     Config
	policy  *Policy
	log     *slog.Logger
	limiter *limiter

	users   *userChecks
	revoked revocations

	mu     sync.Mutex
	logins map[string]cachedLogin // user → a recent successful login
	// checking shares one password check among concurrent logins of the same
	// credentials (32 connections whose cached login expired at once).
	checking singleflight.Group
}

// loginCacheTTL spares bcrypt and LDAP binds on every request of a Basic-auth client.
const loginCacheTTL = time.Minute

// NewService validates the rules and returns the service.
func NewService(cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 5 * time.Minute
	}
	if cfg.RefreshTTL <= 0 {
		cfg.RefreshTTL = 30 * 24 * time.Hour
	}
	if cfg.RateLimit.Failures <= 0 {
		cfg.RateLimit = RateLimit{Failures: 10, Window: time.Minute, Lockout: 5 * time.Minute}
	}
	if cfg.Mode == ModeToken && cfg.Signer == nil {
		return nil, errors.New("token mode needs a signing key")
	}
	p, err := NewPolicy(cfg.Rules)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, policy: p, log: cfg.Logger, logins: map[string]cachedLogin{},
		users:   &userChecks{files: cfg.UsersFile, ldap: cfg.LDAP, now: cfg.Now, answers: map[string]userCheck{}},
		revoked: revocations{before: map[string]time.Time{}},
		limiter: &limiter{cfg: cfg.RateLimit, now: cfg.Now, max: maxLimitEntries, entries: map[string]*limitEntry{}}}
	if cfg.Tokens != nil {
		before, err := cfg.Tokens.Revocations()
		if err != nil {
			return nil, fmt.Errorf("load token revocations: %w", err)
		}
		s.revoked.before = before
	}
	return s, nil
}

// Mode reports how clients authenticate.
func (s *Service) Mode() Mode { return s.cfg.Mode }

// Signer issues and verifies tokens (token mode).
func (s *Service) Signer() *Signer { return s.cfg.Signer }

// TokenTTL and RefreshTTL are the lifetimes of issued tokens.
func (s *Service) TokenTTL() time.Duration   { return s.cfg.TokenTTL }
func (s *Service) RefreshTTL() time.Duration { return s.cfg.RefreshTTL }

// Login checks a user name and password (or CI token) from remote: CI tokens first,
// then the users file, then LDAP. Failures count towards the rate limit; passwords are
// never logged.
func (s *Service) Login(ctx context.Context, user, password, remote string) (*Identity, error) {
	if wait := s.limiter.blocked(user, remote); wait > 0 {
		s.log.Warn("login refused: rate limited", "user", user, "remote", remote)
		return nil, &ErrRateLimited{RetryAfter: wait}
	}
	secret := sha256.Sum256([]byte(password))
	s.mu.Lock()
	c, ok := s.logins[user]
	s.mu.Unlock()
	// CI tokens are never served from the cache: a revoked token stops at once.
	if ok && !strings.HasPrefix(password, ciTokenPrefix) && s.cfg.Now().Before(c.expires) && constantTimeEqual(string(c.secret[:]), string(secret[:])) {
		return c.id, nil
	}
	v, err, _ := s.checking.Do(user+"\x00"+string(secret[:]), func() (any, error) { return s.login(ctx, user, password) })
	id, _ := v.(*Identity)
	if err != nil {
		if errors.Is(err, ErrDirectoryUnavailable) {
			s.log.Error("login failed: LDAP unavailable", "user", user, "remote", remote, "err", err)
			return nil, err
		}
		s.limiter.fail(user, remote)
		s.log.Info("login failed", "user", user, "remote", remote)
		return nil, ErrBadCredentials
	}
	s.limiter.succeed(user, remote)
	if id.Source != "users-file" {
		return id, nil // CI tokens are checked every time; LDAP has its own cache_ttl
	}
	s.mu.Lock()
	if len(s.logins) > 10000 {
		s.logins = map[string]cachedLogin{}
	}
	s.logins[user] = cachedLogin{secret: secret, id: id, expires: s.cfg.Now().Add(loginCacheTTL)}
	s.mu.Unlock()
	return id, nil
}

// ChecksPassword reports whether Login would check user's password (bcrypt, an LDAP
// bind) rather than find the login in its cache or a CI token's record, which cost
// little. The answer may be stale by the time Login runs: it is for rate limits.
func (s *Service) ChecksPassword(user, password string) bool {
	if s.cfg.Tokens != nil && strings.HasPrefix(password, ciTokenPrefix) {
		return false
	}
	secret := sha256.Sum256([]byte(password))
	s.mu.Lock()
	c, ok := s.logins[user]
	s.mu.Unlock()
	return !ok || !s.cfg.Now().Before(c.expires) || !constantTimeEqual(string(c.secret[:]), string(secret[:]))
}

func (s *Service) login(ctx context.Context, user, password string) (*Identity, error) {
	if s.cfg.Tokens != nil && strings.HasPrefix(password, ciTokenPrefix) {
		return s.checkCIToken(ctx, user, password)
	}
	var errs []error
	if s.cfg.UsersFile != nil {
		id, err := s.cfg.UsersFile.Check(ctx, user, password)
		if err == nil || !errors.Is(err, ErrUnknownUser) {
			return id, err
		}
		errs = append(errs, err)
	}
	if s.cfg.LDAP != nil {
		return s.cfg.LDAP.Check(ctx, user, password)
	}
	errs = append(errs, ErrBadCredentials)
	return nil, errors.Join(errs...)
}

// Refresh re-resolves the subject of a refresh token: a user removed from the users
// file or the directory gets nothing, nor does one whose tokens were revoked after it
// was issued, and LDAP users get their current groups.
func (s *Service) Refresh(ctx context.Context, c *Claims) (*Identity, error) {
	if c.IssuedAt == nil || s.Revoked(c.Subject, c.IssuedAt.Time) {
		return nil, ErrUnknownUser
	}
	switch c.Source {
	case "users-file":
		if s.cfg.UsersFile != nil && s.cfg.UsersFile.Has(c.Subject) {
			return &Identity{Name: c.Subject, Source: c.Source}, nil
		}
	case "ldap":
		if s.cfg.LDAP != nil {
			return s.cfg.LDAP.Lookup(ctx, c.Subject)
		}
	}
	return nil, ErrUnknownUser
}

// Decide says whether id may do action on repo of registry, and logs why at debug
// level.
func (s *Service) Decide(id *Identity, registry, repo string, action Action) bool {
	d := s.policy.Decide(id, registry, repo, action)
	s.log.Debug("authorization", "subject", id.String(), "registry", registry, "repo", repo, "action", action, "decision", d.String())
	return d.Allowed
}

// Allowed filters want down to what id may do on repo of registry.
func (s *Service) Allowed(id *Identity, registry, repo string, want []Action) []Action {
	return s.policy.Actions(id, registry, repo, want)
}

// limiter counts failed logins per (user name, client address) pair.
type limiter struct {
	cfg     RateLimit
	now     func() time.Time
	max     int // entries kept at most
	mu      sync.Mutex
	entries map[string]*limitEntry
}

// maxLimitEntries bounds the pairs the limiter remembers.
const maxLimitEntries = 100000

type limitEntry struct {
	failures    int
	windowStart time.Time
	lockedUntil time.Time
}

// pairKey is a (user, address) pair's key. The name is folded to lower case with its
// spaces collapsed: a directory matches "Alice", "ALICE" and " alice " to one entry,
// and each spelling must not get a lockout budget of its own.
func pairKey(user, remote string) string {
	return strings.ToLower(strings.Join(strings.Fields(user), " ")) + "\x00" + remote
}

func (l *limiter) blocked(user, remote string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.entries[pairKey(user, remote)]; e != nil && l.now().Before(e.lockedUntil) {
		return e.lockedUntil.Sub(l.now())
	}
	return 0
}

func (l *limiter) fail(user, remote string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := pairKey(user, remote)
	e := l.entries[k]
	if e == nil {
		l.makeRoom(now)
		e = &limitEntry{windowStart: now}
		l.entries[k] = e
	}
	if now.Sub(e.windowStart) > l.cfg.Window {
		e.failures, e.windowStart = 0, now
	}
	if e.failures++; e.failures >= l.cfg.Failures {
		e.lockedUntil = now.Add(l.cfg.Lockout)
		e.failures, e.windowStart = 0, now
	}
}

// makeRoom keeps the map under its bound: stale entries go first; if every entry is
// live (a flood of distinct pairs), arbitrary ones go, which at worst forgets some
// failures early.
func (l *limiter) makeRoom(now time.Time) {
	if len(l.entries) < l.max {
		return
	}
	for k, e := range l.entries {
		if now.Sub(e.windowStart) > l.cfg.Window && now.After(e.lockedUntil) {
			delete(l.entries, k)
		}
	}
	for k := range l.entries {
		if len(l.entries) < l.max {
			break
		}
		delete(l.entries, k)
	}
}

func (l *limiter) succeed(user, remote string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, pairKey(user, remote))
}
