package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
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

// TokenStore keeps CI tokens (the cache package's index implements it).
type TokenStore interface {
	PutCIToken(t CIToken) error
	GetCIToken(id string) (*CIToken, error) // nil, nil when unknown
	ListCITokens() ([]CIToken, error)
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

func (s *Service) checkCIToken(user, token string) (*Identity, error) {
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
	scopes := t.Scopes
	if scopes == nil {
		scopes = []Grant{}
	}
	return &Identity{Name: t.User, Groups: t.Groups, Source: "token", Limit: scopes}, nil
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
