package auth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
)

// service is a basic-mode service over a users file (alice, bob) and a real index,
// on a clock the test moves.
func service(t *testing.T, now *time.Time) (*auth.Service, string, auth.TokenStore, *cache.Store) {
	t.Helper()
	users := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, users, "alice", "bob")
	uf, err := auth.NewUsersFile(users)
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(cache.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	tokens := auth.NewTokenStore(store.CITokenRecords(), store.RevocationRecords())
	s, err := auth.NewService(auth.Config{Mode: auth.ModeBasic, UsersFile: uf, Tokens: tokens,
		Now: func() time.Time { return *now }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, users, tokens, store
}

func writeUsers(t *testing.T, path string, names ...string) {
	t.Helper()
	var lines string
	for _, n := range names {
		h, _ := bcrypt.GenerateFromPassword([]byte(n+"-pw"), auth.MinBcryptCost)
		lines += n + ":" + string(h) + "\n"
	}
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file is re-read when its modification time changes, checked once a second.
	future := time.Now().Add(time.Duration(len(names)+1) * time.Minute)
	os.Chtimes(path, future, future)
}

// A CI token acts for its user only while the user exists.
func TestCITokensEndWithTheirUser(t *testing.T) {
	now := time.Now()
	s, users, tokens, _ := service(t, &now)
	scope, _ := auth.ParseScope("*/**:pull")
	secret, _, err := auth.CreateCIToken(tokens, "bob", nil, []auth.Grant{scope}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Login(ctx, "bob", secret, "10.0.0.1"); err != nil {
		t.Fatalf("bob's CI token: %v", err)
	}
	writeUsers(t, users, "alice") // bob is removed
	time.Sleep(1100 * time.Millisecond)
	now = now.Add(time.Minute) // past the user check's cache
	if _, err := s.Login(ctx, "bob", secret, "10.0.0.1"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("the CI token of a removed user: %v, want bad credentials", err)
	}
}

// RevokeUser ends a user's CI tokens and every token issued to them so far, at once
// and across restarts; tokens issued afterwards work.
func TestRevokeUserEndsEveryTokenOfTheUser(t *testing.T) {
	now := time.Now()
	s, _, tokens, store := service(t, &now)
	scope, _ := auth.ParseScope("*/**:pull")
	secret, _, err := auth.CreateCIToken(tokens, "bob", nil, []auth.Grant{scope}, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := auth.CreateCIToken(tokens, "alice", nil, []auth.Grant{scope}, 0)
	ctx := context.Background()
	if _, err := s.Login(ctx, "bob", secret, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	issued := now.Add(-time.Hour)
	if s.Revoked("bob", issued) {
		t.Fatal("revoked before any revocation")
	}
	n, err := s.RevokeUser(ctx, "bob")
	if err != nil || n != 1 {
		t.Fatalf("RevokeUser: %d %v", n, err)
	}
	if _, err := s.Login(ctx, "bob", secret, "10.0.0.1"); err == nil {
		t.Error("bob's CI token works after RevokeUser")
	}
	if _, err := s.Login(ctx, "alice", other, "10.0.0.1"); err != nil {
		t.Errorf("alice's CI token after bob's revocation: %v", err)
	}
	if !s.Revoked("bob", issued) || !s.Revoked("bob", now) {
		t.Error("a token issued to bob before the revocation is not revoked")
	}
	if s.Revoked("bob", now.Add(time.Second)) || s.Revoked("alice", issued) {
		t.Error("tokens issued after the revocation, or to others, are revoked")
	}
	// A refresh token issued before the revocation is refused.
	c := &auth.Claims{Source: "users-file"}
	c.Subject, c.IssuedAt = "bob", jwtTime(issued)
	if _, err := s.Refresh(ctx, c); err == nil {
		t.Error("a refresh token issued before the revocation was honoured")
	}
	// The revocation survives a restart of the service.
	restarted, err := auth.NewService(auth.Config{Mode: auth.ModeBasic, Tokens: tokens, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if !restarted.Revoked("bob", issued) {
		t.Error("the revocation was lost on restart")
	}
	_ = store
}

func jwtTime(t time.Time) *jwt.NumericDate { return jwt.NewNumericDate(t) }
