package auth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestMatchGlob(t *testing.T) {
	cases := []struct {
		glob, name string
		want       bool
	}{
		{"foo/img/*", "foo/img/a", true},
		{"foo/img/*", "foo/img/a/b", false},
		{"foo/img/*", "foo/img", false},
		{"team/**", "team/a", true},
		{"team/**", "team/a/b/c", true},
		{"team/**", "teams/a", false},
		{"**", "anything/at/all", true},
		{"*/app", "x/app", true},
		{"*/app", "x/y/app", false},
		{"**/app", "x/y/app", true},
		{"a/**/z", "a/z", true},
		{"a/**/z", "a/b/c/z", true},
		{"a/**/z", "a/b/c/y", false},
		{"lib-*", "lib-core", true},
		{"exact/name", "exact/name", true},
		{"exact/name", "exact/name2", false},
	}
	for _, c := range cases {
		if got := MatchGlob(c.glob, c.name); got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v", c.glob, c.name, got)
		}
	}
}

func TestPolicyDeniesByDefaultAndUnionsRules(t *testing.T) {
	p, err := NewPolicy([]Rule{
		{Subjects: []string{"group:dev"}, Grant: Grant{Registries: []string{"dev"}, Repositories: []string{"team/**"}, Actions: []Action{Pull, Push}}},
		{Subjects: []string{"user:ops-bot"}, Grant: Grant{Registries: []string{"*"}, Repositories: []string{"**"}, Actions: []Action{Delete}}},
		{Subjects: []string{"authenticated"}, Grant: Grant{Registries: []string{"prod"}, Repositories: []string{"**"}, Actions: []Action{Pull}}},
		{Subjects: []string{"anonymous"}, Grant: Grant{Registries: []string{"prod"}, Repositories: []string{"public/*"}, Actions: []Action{Pull}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	dev := &Identity{Name: "dana", Groups: []string{"dev"}}
	bot := &Identity{Name: "ops-bot"}
	var anon *Identity
	limited := &Identity{Name: "dana", Groups: []string{"dev"}, Limit: []Grant{{Registries: []string{"dev"}, Repositories: []string{"team/a"}, Actions: []Action{Pull}}}}
	cases := []struct {
		id     *Identity
		reg    string
		repo   string
		action Action
		want   bool
	}{
		{dev, "dev", "team/app", Push, true},
		{dev, "dev", "team/app", Delete, false},
		{dev, "prod", "team/app", Push, false},
		{dev, "prod", "anything", Pull, true}, // authenticated
		{bot, "dev", "x/y", Delete, true},
		{bot, "dev", "x/y", Pull, false},
		{anon, "prod", "public/img", Pull, true},
		{anon, "prod", "public/a/b", Pull, false},
		{anon, "prod", "private", Pull, false},
		{anon, "dev", "team/app", Pull, false},
		{dev, "prod", "public/img", Pull, true}, // what anonymous may do, everyone may
		{limited, "dev", "team/a", Pull, true},
		{limited, "dev", "team/a", Push, false}, // the token's scope caps the user's rights
		{limited, "dev", "team/b", Pull, false},
	}
	for _, c := range cases {
		if got := p.Decide(c.id, c.reg, c.repo, c.action).Allowed; got != c.want {
			t.Errorf("%s %s %s/%s: %v, want %v", c.id, c.action, c.reg, c.repo, got, c.want)
		}
	}
	if _, err := NewPolicy([]Rule{{Subjects: []string{"root"}, Grant: Grant{Registries: []string{"*"}, Repositories: []string{"**"}, Actions: []Action{Pull}}}}); err == nil {
		t.Error("a rule with an unknown subject kind was accepted")
	}
}

func TestUsersFileNeedsBcryptAndIsReloaded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "htpasswd")
	hash := func(pw string, cost int) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(pw), cost)
		return string(h)
	}
	os.WriteFile(path, []byte("alice:"+hash("secret", 10)+"\n"), 0o600)
	u, err := NewUsersFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if id, err := u.Check(ctx, "alice", "secret"); err != nil || id.Name != "alice" {
		t.Fatalf("alice: %v", err)
	}
	if _, err := u.Check(ctx, "alice", "wrong"); err != ErrBadCredentials {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := u.Check(ctx, "mallory", "secret"); err != ErrUnknownUser {
		t.Errorf("unknown user: %v", err)
	}
	// The file changes: bob appears, alice goes.
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(path, []byte("bob:"+hash("pw", 10)+"\n"), 0o600)
	future := time.Now().Add(2 * time.Second)
	os.Chtimes(path, future, future)
	u.checked = time.Time{}
	if _, err := u.Check(ctx, "bob", "pw"); err != nil {
		t.Errorf("bob after reload: %v", err)
	}
	if _, err := u.Check(ctx, "alice", "secret"); err == nil {
		t.Error("alice still valid after removal")
	}
	for name, content := range map[string]string{
		"md5":      "x:$apr1$abc$def\n",
		"low cost": "x:" + hash("pw", 4) + "\n",
	} {
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := NewUsersFile(path); err == nil {
			t.Errorf("%s hash accepted", name)
		}
	}
}

func TestSignerRejectsTamperedExpiredAndForeignTokens(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "k.pem")
	key, err := LoadOrCreateKey(keyFile, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(key, "dockyard")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Sign(Claims{Access: []Access{{Type: "repository", Name: "a", Actions: []string{"pull"}}}}, "alice", "reg.example.com", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.Verify(tok, "reg.example.com"); err != nil || c.Subject != "alice" || len(c.Access) != 1 {
		t.Fatalf("valid token: %v", err)
	}
	if _, err := s.Verify(tok, "other.example.com"); err == nil {
		t.Error("token accepted for another service")
	}
	tampered := []byte(tok)
	tampered[len(tampered)-5] ^= 1
	if _, err := s.Verify(string(tampered), "reg.example.com"); err == nil {
		t.Error("tampered token accepted")
	}
	expired, _, _ := s.Sign(Claims{}, "alice", "reg.example.com", -time.Hour)
	if _, err := s.Verify(expired, "reg.example.com"); err == nil {
		t.Error("expired token accepted")
	}
	otherKey, _ := LoadOrCreateKey(filepath.Join(t.TempDir(), "k2.pem"), true)
	other, _ := NewSigner(otherKey, "dockyard")
	forged, _, _ := other.Sign(Claims{}, "alice", "reg.example.com", time.Minute)
	if _, err := s.Verify(forged, "reg.example.com"); err == nil {
		t.Error("token of another key accepted")
	}
	// The key is reused across restarts: a token signed before verifies after.
	again, err := LoadOrCreateKey(keyFile, true)
	if err != nil {
		t.Fatal(err)
	}
	restarted, _ := NewSigner(again, "dockyard")
	if _, err := restarted.Verify(tok, "reg.example.com"); err != nil {
		t.Errorf("a token from before the restart: %v", err)
	}
}

// Failed logins lock out the (user, address) pair: the attacker's address, not the
// user everywhere, and not every user behind the attacker's address.
func TestRateLimitLocksOutTheUserAddressPair(t *testing.T) {
	now := time.Unix(1e9, 0)
	clock := func() time.Time { return now }
	s, err := NewService(Config{Mode: ModeBasic, Rules: nil, RateLimit: RateLimit{Failures: 3, Window: time.Minute, Lockout: time.Minute}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		if _, err := s.Login(ctx, "alice", "bad", "10.0.0.1"); err != ErrBadCredentials {
			t.Fatalf("failure: %v", err)
		}
	}
	if _, err := s.Login(ctx, "alice", "bad", "10.0.0.1"); err == nil {
		t.Fatal("locked-out pair logged in")
	} else if _, ok := err.(*ErrRateLimited); !ok {
		t.Errorf("locked-out pair: %v, want rate limited", err)
	}
	// A directory finds alice however her name is written: so does the lockout.
	for _, spelling := range []string{"Alice", "ALICE", " alice", "alice  ", "a lice"[:1] + "lice"} {
		if _, err := s.Login(ctx, spelling, "bad", "10.0.0.1"); err == nil {
			t.Errorf("%q logged in while alice is locked out", spelling)
		} else if _, ok := err.(*ErrRateLimited); !ok {
			t.Errorf("%q while alice is locked out: %v, want rate limited", spelling, err)
		}
	}
	if _, err := s.Login(ctx, "alice", "bad", "10.0.0.2"); err != ErrBadCredentials {
		t.Errorf("alice from another address: %v, want an ordinary failure", err)
	}
	if _, err := s.Login(ctx, "bob", "bad", "10.0.0.1"); err != ErrBadCredentials {
		t.Errorf("another user from the attacker's address: %v, want an ordinary failure", err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := s.Login(ctx, "alice", "bad", "10.0.0.1"); err != ErrBadCredentials {
		t.Errorf("after the lockout: %v", err)
	}
}

// The limiter remembers a bounded number of pairs, however many attack at once.
func TestRateLimiterIsBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := &limiter{cfg: RateLimit{Failures: 3, Window: time.Minute, Lockout: time.Minute}, now: func() time.Time { return now }, max: 100, entries: map[string]*limitEntry{}}
	for i := range 1000 {
		l.fail("user", fmt.Sprint("10.0.", i/250, ".", i%250))
		if len(l.entries) > 100 {
			t.Fatalf("%d entries after %d failures, bound 100", len(l.entries), i+1)
		}
	}
}
