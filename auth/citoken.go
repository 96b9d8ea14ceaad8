package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// CI tokens are long-lived secrets for automation. They work as passwords (docker
// login -u USER -p TOKEN), carry their user's rights capped by their own scopes, and
// are stored only as hashes.

const ciTokenPrefix = "dyt_"

// CIToken is a stored token: never the secret itself.
type CIToken struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Groups    []string  `json:"groups,omitempty"`
	Scopes    []Grant   `json:"scopes"`
	Hash      string    `json:"hash"` // hex sha256 of the secret
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"` // zero: never
	Revoked   bool      `json:"revoked"`
}

// TokenStore keeps CI tokens and per-user revocations.
type TokenStore interface {
	PutCIToken(t CIToken) error
	GetCIToken(id string) (*CIToken, error) // nil, nil when unknown
	ListCITokens() ([]CIToken, error)
	// PutRevocation records that every token issued to user before `before` is void.
	PutRevocation(user string, before time.Time) error
	Revocations() (map[string]time.Time, error)
	// Revocation is user's revocation; ok is false when there is none.
	Revocation(user string) (before time.Time, ok bool, err error)
}

// Records is a table of opaque records by id (the index keeps them: see
// cache.RecordTable).
type Records interface {
	Put(id string, v []byte) error
	Get(id string) ([]byte, bool, error)
	List(fn func(id string, v []byte) error) error
}

// NewTokenStore keeps CI tokens and revocations as JSON records in two tables.
func NewTokenStore(tokens, revocations Records) TokenStore {
	return recordTokenStore{tokens: tokens, revocations: revocations}
}

type recordTokenStore struct{ tokens, revocations Records }

func (s recordTokenStore) PutCIToken(t CIToken) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return s.tokens.Put(t.ID, b)
}

func (s recordTokenStore) GetCIToken(id string) (*CIToken, error) {
	v, ok, err := s.tokens.Get(id)
	if !ok || err != nil {
		return nil, err
	}
	var t CIToken
	if err := json.Unmarshal(v, &t); err != nil {
		return nil, fmt.Errorf("CI token record %s: %w", id, err)
	}
	return &t, nil
}

func (s recordTokenStore) ListCITokens() ([]CIToken, error) {
	var out []CIToken
	err := s.tokens.List(func(id string, v []byte) error {
		var t CIToken
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("CI token record %s: %w", id, err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

type revocation struct {
	Before time.Time `json:"before"`
}

func (s recordTokenStore) PutRevocation(user string, before time.Time) error {
	b, err := json.Marshal(revocation{Before: before.UTC()})
	if err != nil {
		return err
	}
	return s.revocations.Put(user, b)
}

func (s recordTokenStore) Revocation(user string) (time.Time, bool, error) {
	v, ok, err := s.revocations.Get(user)
	if err != nil || !ok {
		return time.Time{}, false, err
	}
	var r revocation
	if err := json.Unmarshal(v, &r); err != nil {
		return time.Time{}, false, fmt.Errorf("revocation record %s: %w", user, err)
	}
	return r.Before, true, nil
}

func (s recordTokenStore) Revocations() (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := s.revocations.List(func(user string, v []byte) error {
		var r revocation
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("revocation record %s: %w", user, err)
		}
		out[user] = r.Before
		return nil
	})
	return out, err
}

// NewCIToken makes a token for user with scopes, expiring after ttl (0: never). It
// returns the secret, shown once, and the record to store.
func NewCIToken(user string, groups []string, scopes []Grant, ttl time.Duration, now time.Time) (string, CIToken) {
	var idb [6]byte
	var secret [20]byte
	rand.Read(idb[:])
	rand.Read(secret[:])
	id := hex.EncodeToString(idb[:])
	token := ciTokenPrefix + id + "_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret[:]))
	t := CIToken{ID: id, User: user, Groups: groups, Scopes: scopes, Hash: hashSecret(token), CreatedAt: now.UTC()}
	if ttl > 0 {
		t.ExpiresAt = now.Add(ttl).UTC()
	}
	return token, t
}

func hashSecret(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ParseScope reads a token scope "REGISTRY/GLOB:ACTION[,ACTION…]", e.g.
// "dev/team/*:pull,push" or "*/**:pull".
func ParseScope(s string) (Grant, error) {
	target, actions, ok := strings.Cut(s, ":")
	registry, glob, ok2 := strings.Cut(target, "/")
	if !ok || !ok2 || registry == "" || glob == "" {
		return Grant{}, fmt.Errorf("scope %q: want REGISTRY/REPOSITORY-GLOB:ACTIONS", s)
	}
	g := Grant{Registries: []string{registry}, Repositories: []string{glob}}
	for _, a := range strings.Split(actions, ",") {
		act, err := ParseAction(strings.TrimSpace(a))
		if err != nil {
			return Grant{}, fmt.Errorf("scope %q: %w", s, err)
		}
		g.Actions = append(g.Actions, act)
	}
	return g, nil
}

var errTokenInvalid = errors.New("invalid token")

func (s *Service) checkCIToken(ctx context.Context, user, token string) (*Identity, error) {
	rest := strings.TrimPrefix(token, ciTokenPrefix)
	id, _, ok := strings.Cut(rest, "_")
	if !ok {
		return nil, errTokenInvalid
	}
	t, err := s.cfg.Tokens.GetCIToken(id)
	if err != nil {
		return nil, err
	}
	if t == nil || t.Revoked || !constantTimeEqual(t.Hash, hashSecret(token)) {
		return nil, errTokenInvalid
	}
	if !t.ExpiresAt.IsZero() && s.cfg.Now().After(t.ExpiresAt) {
		return nil, errTokenInvalid
	}
	if user != t.User && user != "token" {
		return nil, errTokenInvalid
	}
	// The token acts for its user only while the user exists: removing someone from
	// the users file or the directory ends their tokens too.
	current, err := s.users.lookup(ctx, t.User)
	if err != nil {
		return nil, err
	}
	groups := t.Groups
	if current.Source == "ldap" {
		groups = current.Groups // the directory's groups now, as for refresh tokens
	}
	scopes := t.Scopes
	if scopes == nil {
		scopes = []Grant{}
	}
	return &Identity{Name: t.User, Groups: groups, Source: "token", Limit: scopes, TokenID: t.ID}, nil
}

// CreateCIToken stores a new token and returns its secret.
func CreateCIToken(store TokenStore, user string, groups []string, scopes []Grant, ttl time.Duration) (string, CIToken, error) {
	secret, t := NewCIToken(user, groups, scopes, ttl, time.Now())
	return secret, t, store.PutCIToken(t)
}

// RevokeCIToken marks a token revoked.
func RevokeCIToken(store TokenStore, id string) error {
	t, err := store.GetCIToken(id)
	if err != nil {
		return err
	}
	if t == nil {
		return fmt.Errorf("no token %q", id)
	}
	t.Revoked = true
	return store.PutCIToken(*t)
}
