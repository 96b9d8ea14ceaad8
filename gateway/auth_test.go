package gateway_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
)

// authRegistry serves one hosted registry "default" under rules for alice (team/**:
// everything), bob (team/**: pull; bob/**: pull, push) and anonymous (public/*: pull).
func authRegistry(t *testing.T, mode auth.Mode, gatewayOpts ...func(*gateway.Options)) *testRegistry {
	t.Helper()
	dir := t.TempDir()
	users := filepath.Join(t.TempDir(), "htpasswd")
	var lines string
	for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
		h, _ := bcrypt.GenerateFromPassword([]byte(u[1]), auth.MinBcryptCost)
		lines += u[0] + ":" + string(h) + "\n"
	}
	os.WriteFile(users, []byte(lines), 0o600)
	var adjust func(*gateway.Options)
	if len(gatewayOpts) > 0 {
		adjust = gatewayOpts[0]
	}
	return startRegistry(t, dir, registryOptions{gateway: adjust, auth: func(store *cache.Store) *auth.Service {
		uf, err := auth.NewUsersFile(users)
		if err != nil {
			t.Fatal(err)
		}
		cfg := auth.Config{Mode: mode, UsersFile: uf, Tokens: tokenStore(store), Rules: []auth.Rule{
			{Subjects: []string{"user:alice"}, Grant: auth.Grant{Registries: []string{"*"}, Repositories: []string{"team/**", "secret/**", "public/**"}, Actions: []auth.Action{auth.Pull, auth.Push, auth.Delete}}},
			{Subjects: []string{"user:bob"}, Grant: auth.Grant{Registries: []string{"default"}, Repositories: []string{"team/**"}, Actions: []auth.Action{auth.Pull}}},
			{Subjects: []string{"user:bob"}, Grant: auth.Grant{Registries: []string{"default"}, Repositories: []string{"bob/**"}, Actions: []auth.Action{auth.Pull, auth.Push}}},
			{Subjects: []string{"anonymous"}, Grant: auth.Grant{Registries: []string{"default"}, Repositories: []string{"public/*"}, Actions: []auth.Action{auth.Pull}}},
		}, RateLimit: auth.RateLimit{Failures: 5, Window: time.Minute, Lockout: time.Minute}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if mode == auth.ModeToken {
			key, err := auth.LoadOrCreateKey(filepath.Join(dir, "key.pem"), true)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Signer, err = auth.NewSigner(key, "dockyard"); err != nil {
				t.Fatal(err)
			}
		}
		s, err := auth.NewService(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}})
}

func tokenStore(store *cache.Store) auth.TokenStore {
	return auth.NewTokenStore(store.CITokenRecords(), store.RevocationRecords())
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// seed pushes content as alice: team/app:v1, public/img:v1, secret/x:v1.
func seed(r *testRegistry, aliceAuth string) {
	r.headers = []string{"Authorization", aliceAuth}
	for _, repo := range []string{"team/app", "public/img", "secret/x"} {
		r.pushImage(repo, "v1", []byte(`{"repo":"`+repo+`"}`), []byte("layer of "+repo))
	}
	r.headers = nil
}

func TestBasicAuthAllowsChallengesAndDenies(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic)
	seed(r, basic("alice", "alice-pw"))
	cases := []struct {
		name, method, path, authz string
		status                    int
	}{
		{"anonymous ping", "GET", "/v2/", "", 401},
		{"ping with credentials", "GET", "/v2/", basic("bob", "bob-pw"), 200},
		{"wrong password", "GET", "/v2/", basic("bob", "nope"), 401},
		{"anonymous pull of public", "GET", "/v2/public/img/manifests/v1", "", 200},
		{"anonymous pull of team", "GET", "/v2/team/app/manifests/v1", "", 401},
		{"anonymous push", "POST", "/v2/public/img/blobs/uploads/", "", 401},
		{"bob pulls team", "GET", "/v2/team/app/manifests/v1", basic("bob", "bob-pw"), 200},
		{"bob may not push team", "POST", "/v2/team/app/blobs/uploads/", basic("bob", "bob-pw"), 403},
		{"bob may not delete team", "DELETE", "/v2/team/app/manifests/v1", basic("bob", "bob-pw"), 403},
		{"bob may not pull secret", "GET", "/v2/secret/x/manifests/v1", basic("bob", "bob-pw"), 403},
		{"bob pushes his own", "POST", "/v2/bob/tool/blobs/uploads/", basic("bob", "bob-pw"), 202},
		{"alice deletes team", "DELETE", "/v2/team/app/manifests/v1", basic("alice", "alice-pw"), 202},
	}
	for _, c := range cases {
		resp := r.do(c.method, c.path, nil, "Authorization", c.authz)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d (%s)", c.name, resp.StatusCode, c.status, resp.body)
		}
		if c.status == 401 && resp.Header.Get("WWW-Authenticate") != `Basic realm="dockyard"` {
			t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
		}
		if c.status == 403 && !strings.Contains(string(resp.body), "DENIED") {
			t.Errorf("%s: %s", c.name, resp.body)
		}
	}
	var cat struct{ Repositories []string }
	json.Unmarshal(r.do("GET", "/v2/_catalog", nil, "Authorization", basic("bob", "bob-pw")).body, &cat)
	if strings.Join(cat.Repositories, ",") != "public/img,team/app" {
		t.Errorf("bob's catalog: %v", cat.Repositories)
	}
	json.Unmarshal(r.do("GET", "/v2/_catalog", nil).body, &cat)
	if strings.Join(cat.Repositories, ",") != "public/img" {
		t.Errorf("anonymous catalog: %v", cat.Repositories)
	}
}

// token asks the token endpoint for scopes with credentials (empty: anonymous).
func (r *testRegistry) token(t *testing.T, authz string, scopes ...string) (string, int) {
	t.Helper()
	q := url.Values{"service": {r.addr}, "scope": scopes}
	resp := r.do("GET", "/token?"+q.Encode(), nil, "Authorization", authz)
	var body struct{ Token string }
	json.Unmarshal(resp.body, &body)
	return body.Token, resp.StatusCode
}

func TestTokenAuthGrantsOnlyWhatWasAskedAndAllowed(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	aliceTok, st := r.token(t, basic("alice", "alice-pw"), "repository:team/app:pull,push,delete")
	if st != 200 || aliceTok == "" {
		t.Fatalf("alice's token: %d", st)
	}
	seed(r, "Bearer "+mustToken(t, r, basic("alice", "alice-pw"), "repository:team/app:pull,push", "repository:public/img:pull,push", "repository:secret/x:pull,push"))

	resp := r.do("GET", "/v2/", nil)
	wa := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != 401 || !strings.Contains(wa, `realm="http://`+r.addr+`/token"`) || !strings.Contains(wa, `service="`+r.addr+`"`) {
		t.Fatalf("challenge: %d %q", resp.StatusCode, wa)
	}
	if resp := r.do("GET", "/v2/team/app/manifests/v1", nil); !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="repository:team/app:pull"`) {
		t.Errorf("challenge for a pull names the scope: %q", resp.Header.Get("WWW-Authenticate"))
	}
	if _, st := r.token(t, basic("alice", "wrong"), "repository:team/app:pull"); st != 401 {
		t.Errorf("token with a wrong password: %d", st)
	}

	bobTok := mustToken(t, r, basic("bob", "bob-pw"), "repository:team/app:pull,push")
	claims := decodeClaims(t, bobTok)
	if len(claims.Access) != 1 || strings.Join(claims.Access[0].Actions, ",") != "pull" {
		t.Errorf("bob asked pull,push on team/app and must get pull only: %+v", claims.Access)
	}
	anonTok := mustToken(t, r, "", "repository:public/img:pull", "repository:team/app:pull")
	if c := decodeClaims(t, anonTok); len(c.Access) != 1 || c.Access[0].Name != "public/img" {
		t.Errorf("anonymous token: %+v", c.Access)
	}

	bearer := func(tok string) string { return "Bearer " + tok }
	cases := []struct {
		name, method, path, authz string
		status                    int
	}{
		{"bob pulls with his token", "GET", "/v2/team/app/manifests/v1", bearer(bobTok), 200},
		{"bob's token does not push", "POST", "/v2/team/app/blobs/uploads/", bearer(bobTok), 403},
		{"bob's token is for team/app only", "GET", "/v2/bob/tool/tags/list", bearer(bobTok), 401},
		{"anonymous token pulls public", "GET", "/v2/public/img/manifests/v1", bearer(anonTok), 200},
		{"anonymous token does not pull team", "GET", "/v2/team/app/manifests/v1", bearer(anonTok), 401},
		{"alice pushes with her token", "POST", "/v2/team/app/blobs/uploads/", bearer(aliceTok), 202},
		{"tampered token", "GET", "/v2/team/app/manifests/v1", bearer(tamper(aliceTok)), 401},
		{"garbage token", "GET", "/v2/team/app/manifests/v1", "Bearer not.a.jwt", 401},
		{"Basic still works on the API", "GET", "/v2/team/app/manifests/v1", basic("bob", "bob-pw"), 200},
	}
	for _, c := range cases {
		resp := r.do(c.method, c.path, nil, "Authorization", c.authz)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d (%s)", c.name, resp.StatusCode, c.status, resp.body)
		}
	}
	// A token is bound to its service (the Host): useless on another virtual host.
	resp = r.do("GET", "/v2/team/app/manifests/v1", nil, "Authorization", bearer(aliceTok), "Host", "other.example.com")
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("token of another service: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestTokenEndpointPasswordAndRefreshGrants(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-pw"},
		"service": {r.addr}, "scope": {"repository:team/app:pull"}, "client_id": {"docker"}, "access_type": {"offline"}}
	resp := r.do("POST", "/token", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	var body struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	json.Unmarshal(resp.body, &body)
	if resp.StatusCode != 200 || body.AccessToken == "" || body.RefreshToken == "" {
		t.Fatalf("password grant: %d %s", resp.StatusCode, resp.body)
	}
	// A refresh token is not an access token.
	if r := r.do("GET", "/v2/team/app/tags/list", nil, "Authorization", "Bearer "+body.RefreshToken); r.StatusCode != 401 {
		t.Errorf("refresh token used as access token: %d", r.StatusCode)
	}
	form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {body.RefreshToken}, "service": {r.addr},
		"scope": {"repository:team/app:pull,push"}, "client_id": {"docker"}}
	resp = r.do("POST", "/token", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	json.Unmarshal(resp.body, &body)
	if resp.StatusCode != 200 {
		t.Fatalf("refresh grant: %d %s", resp.StatusCode, resp.body)
	}
	if c := decodeClaims(t, body.AccessToken); c.Subject != "alice" || strings.Join(c.Access[0].Actions, ",") != "pull,push" {
		t.Errorf("refreshed token: %+v", c)
	}
	form.Set("refresh_token", tamper(form.Get("refresh_token")))
	if resp := r.do("POST", "/token", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded"); resp.StatusCode != 401 {
		t.Errorf("tampered refresh token: %d", resp.StatusCode)
	}
}

func TestMountWithoutPullOnTheSourceIsAnUpload(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic)
	seed(r, basic("alice", "alice-pw"))
	d := sha256Of([]byte("layer of secret/x"))
	resp := r.do("POST", "/v2/bob/tool/blobs/uploads/?mount="+d+"&from=secret/x", nil, "Authorization", basic("bob", "bob-pw"))
	if resp.StatusCode != 202 {
		t.Errorf("bob mounting from secret/x: %d, want 202 (an upload)", resp.StatusCode)
	}
	resp = r.do("POST", "/v2/bob/tool/blobs/uploads/?mount="+d, nil, "Authorization", basic("bob", "bob-pw"))
	if resp.StatusCode != 202 {
		t.Errorf("bob mounting without from: %d, want 202", resp.StatusCode)
	}
	if resp := r.do("GET", "/v2/bob/tool/blobs/"+d, nil, "Authorization", basic("bob", "bob-pw")); resp.StatusCode != 404 {
		t.Errorf("the secret blob reached bob's repository: %d", resp.StatusCode)
	}
	resp = r.do("POST", "/v2/team/new/blobs/uploads/?mount="+d+"&from=secret/x", nil, "Authorization", basic("alice", "alice-pw"))
	if resp.StatusCode != 201 {
		t.Errorf("alice mounting from secret/x: %d, want 201", resp.StatusCode)
	}
}

func TestCITokensActWithinTheirScopeUntilRevoked(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic)
	seed(r, basic("alice", "alice-pw"))
	scope, _ := auth.ParseScope("default/team/app:pull")
	secret, tok, err := auth.CreateCIToken(tokenStore(r.store), "alice", nil, []auth.Grant{scope}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ci := basic("alice", secret)
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/v2/team/app/manifests/v1", 200},
		{"POST", "/v2/team/app/blobs/uploads/", 403}, // alice may push, her token may not
		{"GET", "/v2/secret/x/manifests/v1", 403},
	} {
		if resp := r.do(c.method, c.path, nil, "Authorization", ci); resp.StatusCode != c.status {
			t.Errorf("CI token %s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
	}
	if resp := r.do("GET", "/v2/team/app/manifests/v1", nil, "Authorization", basic("bob", secret)); resp.StatusCode != 401 {
		t.Errorf("alice's token with bob's name: %d", resp.StatusCode)
	}
	stored, _ := tokenStore(r.store).GetCIToken(tok.ID)
	if stored == nil || strings.Contains(stored.Hash, secret) || stored.Hash == secret {
		t.Fatalf("token record: %+v", stored)
	}
	if err := auth.RevokeCIToken(tokenStore(r.store), tok.ID); err != nil {
		t.Fatal(err)
	}
	if resp := r.do("GET", "/v2/team/app/manifests/v1", nil, "Authorization", ci); resp.StatusCode != 401 {
		t.Errorf("revoked token: %d", resp.StatusCode)
	}
}

func TestRepeatedFailedLoginsAreRateLimited(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic)
	for range 5 {
		r.do("GET", "/v2/", nil, "Authorization", basic("alice", "guess"))
	}
	resp := r.do("GET", "/v2/", nil, "Authorization", basic("alice", "alice-pw"))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("after 5 failures: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func mustToken(t *testing.T, r *testRegistry, authz string, scopes ...string) string {
	t.Helper()
	tok, st := r.token(t, authz, scopes...)
	if st != 200 || tok == "" {
		t.Fatalf("token for %v: %d", scopes, st)
	}
	return tok
}

// tamper changes one character of a JWT's payload.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return tok + "x"
	}
	p := []byte(parts[1])
	if p[5] == 'A' {
		p[5] = 'B'
	} else {
		p[5] = 'A'
	}
	return parts[0] + "." + string(p) + "." + parts[2]
}

func decodeClaims(t *testing.T, tok string) auth.Claims {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c auth.Claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// go-containerregistry's client does the whole Docker token dance: ping, challenge,
// token with scopes (including the mount source), push and pull.
func TestRealClientPushesAndPullsThroughTokenAuth(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})
	if err := remote.Write(r.ref("team/real:v1"), img, alice); err != nil {
		t.Fatalf("alice pushes: %v", err)
	}
	got, err := remote.Image(r.ref("team/real:v1"), remote.WithAuth(&authn.Basic{Username: "bob", Password: "bob-pw"}))
	if err != nil {
		t.Fatalf("bob pulls: %v", err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatal(err)
	}
	err = remote.Write(r.ref("team/real:v2"), img, remote.WithAuth(&authn.Basic{Username: "bob", Password: "bob-pw"}))
	if err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("bob pushes to team: %v, want DENIED", err)
	}
	if _, err := remote.Image(r.ref("team/real:v1")); err == nil {
		t.Error("anonymous pulled a private image")
	}
}

// A reload that turns authentication off while a token request is logging in: the
// request finishes under the configuration it began with (it used to read the new one
// half way and dereference a nil service).
func TestReloadDuringATokenLoginFinishesUnderItsConfiguration(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	users := filepath.Join(t.TempDir(), "slow")
	h, _ := bcrypt.GenerateFromPassword([]byte("slow-pw"), 11) // a login takes a while (longer than the 50 ms below)
	os.WriteFile(users, []byte("slow:"+string(h)+"\n"), 0o600)
	uf, err := auth.NewUsersFile(users)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := auth.LoadOrCreateKey(filepath.Join(t.TempDir(), "key.pem"), true)
	signer, _ := auth.NewSigner(key, "dockyard")
	svc, err := auth.NewService(auth.Config{Mode: auth.ModeToken, UsersFile: uf, Signer: signer, Tokens: tokenStore(r.store),
		Rules:  []auth.Rule{{Subjects: []string{"user:slow"}, Grant: auth.Grant{Registries: []string{"*"}, Repositories: []string{"**"}, Actions: []auth.Action{auth.Pull}}}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	live := r.gw.Live()
	live.Auth = svc
	r.gw.Reload(live)
	done := make(chan int, 1)
	go func() {
		_, code := r.token(t, basic("slow", "slow-pw"), "repository:team/app:pull")
		done <- code
	}()
	// The login is under way: its request is being handled (it took its live options
	// when it began), and its password check takes a while.
	for deadline := time.Now().Add(time.Minute); gateway.Handling(r.gw) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the token request never reached a handler")
		}
	}
	time.Sleep(20 * time.Millisecond)
	off := r.gw.Live()
	off.Auth = nil
	r.gw.Reload(off)
	select {
	case code := <-done:
		if code != 200 {
			t.Errorf("the token request begun before the reload: %d, want 200", code)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the token request never finished")
	}
	if resp := r.do("GET", "/v2/team/app/tags/list", nil); resp.StatusCode != 200 && resp.StatusCode != 404 {
		t.Errorf("after the reload (authentication off): %d", resp.StatusCode)
	}
}
