package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/upstream"
	"github.com/dockyard/dockyard/vhost"
)

// federated serves hosted "dev" on dev.test, hosted "prod" on prod.test (both token
// hosts sharing the service "registry.test"), and a proxy "vendor" of a private
// upstream that holds vendor/secret:v1. alice may do everything on dev and nothing
// else; nobody may pull through vendor.
func federated(t *testing.T) (r *testRegistry, upstreamHost string) {
	t.Helper()
	up := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(up.Close)
	upstreamHost = strings.TrimPrefix(up.URL, "http://")
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"vendor/secret", "vendor/public/x", "public/x"} {
		ref, _ := name.ParseReference(upstreamHost + "/" + repo + ":v1")
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	r = startRegistry(t, dir, registryOptions{
		registries: func(store *cache.Store) ([]vhost.Registry, []vhost.Route) {
			client, err := upstream.New(upstream.Config{URL: up.URL, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			dev := vhost.NewHosted("dev", store, vhost.HostedOptions{})
			prod := vhost.NewHosted("prod", store, vhost.HostedOptions{})
			vendor := vhost.NewProxy("vendor", store, client, vhost.ProxyOptions{TagTTL: time.Hour})
			return []vhost.Registry{dev, prod, vendor}, []vhost.Route{
				{Host: "dev.test", Registry: "dev"}, {Host: "prod.test", Registry: "prod"}, {Host: "*", Registry: "dev"},
				// One proxy two ways: under the vendor/ namespace of ns.test (vendor/x is
				// the proxy's x), and whole on mirror.test (vendor/x is vendor/x).
				{Host: "ns.test", Registry: "dev", Namespaces: map[string]string{"vendor": "vendor"}}, {Host: "mirror.test", Registry: "vendor"},
			}
		},
		gateway: func(o *gateway.Options) {
			o.TokenHosts = []gateway.TokenHost{{Host: "dev.test", Service: "registry.test"}, {Host: "prod.test", Service: "registry.test"},
				{Host: "ns.test", Service: "registry.test"}, {Host: "mirror.test", Service: "registry.test"}}
		},
		auth: func(store *cache.Store) *auth.Service {
			key, err := auth.LoadOrCreateKey(filepath.Join(dir, "key.pem"), true)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := auth.NewSigner(key, "dockyard")
			if err != nil {
				t.Fatal(err)
			}
			s, err := auth.NewService(auth.Config{Mode: auth.ModeToken, Signer: signer, UsersFile: usersFile(t, "alice", "alice-pw"), Tokens: tokenStore(store),
				Rules: []auth.Rule{{Subjects: []string{"user:alice"}, Grant: auth.Grant{Registries: []string{"dev"}, Repositories: []string{"**"},
					Actions: []auth.Action{auth.Pull, auth.Push, auth.Delete}}},
					{Subjects: []string{"user:alice"}, Grant: auth.Grant{Registries: []string{"vendor"}, Repositories: []string{"public/**"},
						Actions: []auth.Action{auth.Pull}}}},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
	return r, upstreamHost
}

func usersFile(t *testing.T, user, password string) *auth.UsersFile {
	t.Helper()
	h, _ := bcrypt.GenerateFromPassword([]byte(password), auth.MinBcryptCost)
	p := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(user+":"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uf, err := auth.NewUsersFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return uf
}

// hostToken asks the token endpoint of host for scopes as alice.
func hostToken(t *testing.T, r *testRegistry, host string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {"registry.test"}, "scope": scopes}
	resp := r.do("GET", "/token?"+q.Encode(), nil, "Authorization", basic("alice", "alice-pw"), "Host", host)
	var body struct{ Token string }
	if json.Unmarshal(resp.body, &body); resp.StatusCode != 200 || body.Token == "" {
		t.Fatalf("token on %s: %d %s", host, resp.StatusCode, resp.body)
	}
	return body.Token
}

// A token granted for a repository of one registry must not open the same name in
// another registry: not through containerd's ns parameter (which routes to a proxy of
// that upstream, here one holding private upstream credentials), and not on another
// host that shares the token service.
func TestTokensAreBoundToTheRegistryTheyWereGrantedFor(t *testing.T) {
	r, upstreamHost := federated(t)
	tok := hostToken(t, r, "dev.test", "repository:vendor/secret:pull")
	if c := decodeClaims(t, tok); len(c.Access) != 1 || c.Access[0].Registry != "dev" {
		t.Fatalf("alice's token for vendor/secret on dev: %+v", c.Access)
	}
	bearer := "Bearer " + tok
	resp := r.do("GET", "/v2/vendor/secret/manifests/v1?ns="+upstreamHost, nil, "Authorization", bearer, "Host", "dev.test")
	if resp.StatusCode == 200 || resp.Header.Get("OCI-Namespace") != "" {
		t.Fatalf("a dev token pulled through the vendor proxy with ns=: %d %s", resp.StatusCode, resp.body)
	}
	if resp.StatusCode != 404 || !strings.Contains(string(resp.body), "MANIFEST_UNKNOWN") {
		t.Errorf("with ns ignored the request is dev's, which lacks it: %d %s", resp.StatusCode, resp.body)
	}

	// Two hosts, one service: a token from dev.test works on prod.test's audience but
	// not on prod's repositories.
	tok = hostToken(t, r, "dev.test", "repository:team/app:pull,push")
	resp = r.do("POST", "/v2/team/app/blobs/uploads/", nil, "Authorization", "Bearer "+tok, "Host", "prod.test")
	if resp.StatusCode != 403 && resp.StatusCode != 401 {
		t.Fatalf("a dev token opened an upload on prod: %d %s", resp.StatusCode, resp.body)
	}
	if resp := r.do("POST", "/v2/team/app/blobs/uploads/", nil, "Authorization", "Bearer "+tok, "Host", "dev.test"); resp.StatusCode != 202 {
		t.Errorf("the same token on dev: %d %s", resp.StatusCode, resp.body)
	}
	// Asked on prod.test, the grant is decided for prod: alice gets nothing there.
	q := url.Values{"service": {"registry.test"}, "scope": {"repository:team/app:pull,push"}}
	resp = r.do("GET", "/token?"+q.Encode(), nil, "Authorization", basic("alice", "alice-pw"), "Host", "prod.test")
	var body struct{ Token string }
	json.Unmarshal(resp.body, &body)
	if c := decodeClaims(t, body.Token); len(c.Access) != 0 {
		t.Errorf("alice's token on prod: %+v", c.Access)
	}

	// Same client name, same registry, another repository inside it: alice may pull
	// the proxy's public/x (vendor/public/x on ns.test) but not its vendor/public/x
	// (the same name on mirror.test), whose upstream credentials are the proxy's.
	tok = hostToken(t, r, "ns.test", "repository:vendor/public/x:pull")
	if c := decodeClaims(t, tok); len(c.Access) != 1 || c.Access[0].Registry != "vendor" || c.Access[0].Repository != "public/x" {
		t.Fatalf("alice's token for vendor/public/x on ns.test: %+v", c.Access)
	}
	if resp := r.do("GET", "/v2/vendor/public/x/manifests/v1", nil, "Authorization", "Bearer "+tok, "Host", "ns.test"); resp.StatusCode != 200 {
		t.Errorf("the grant where it was made: %d %s", resp.StatusCode, resp.body)
	}
	resp = r.do("GET", "/v2/vendor/public/x/manifests/v1", nil, "Authorization", "Bearer "+tok, "Host", "mirror.test")
	if resp.StatusCode == 200 {
		t.Errorf("a grant for the proxy's public/x pulled its vendor/public/x on another host")
	}
	if resp := r.do("GET", "/v2/vendor/public/x/manifests/v1", nil, "Authorization", basic("alice", "alice-pw"), "Host", "mirror.test"); resp.StatusCode == 200 {
		t.Errorf("alice's own credentials pulled vendor/public/x on mirror.test: the case proves nothing")
	}
	resp = r.do("GET", "/v2/vendor/public/x/manifests/v1?ns="+upstreamHost, nil, "Authorization", "Bearer "+tok, "Host", "ns.test")
	if resp.StatusCode == 200 && resp.Header.Get("OCI-Namespace") != "" {
		t.Errorf("a grant for the proxy's public/x pulled its vendor/public/x through ns=")
	}
}

// A CI token exchanged for a bearer token keeps its scope for what is decided for its
// subject rather than from the token's access list: the catalog and mounts that name
// no source.
func TestCITokenLimitSurvivesTheExchangeForABearerToken(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	aliceAll := "Bearer " + mustToken(t, r, basic("alice", "alice-pw"), "repository:team/app:pull,push", "repository:public/img:pull,push", "repository:secret/x:pull,push")
	seed(r, aliceAll)
	scope, _ := auth.ParseScope("default/team/**:pull,push")
	secret, _, err := auth.CreateCIToken(tokenStore(r.store), "alice", nil, []auth.Grant{scope}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ci := basic("alice", secret)
	tok := mustToken(t, r, ci, "registry:catalog:*", "repository:team/new:pull,push")
	var cat struct{ Repositories []string }
	resp := r.do("GET", "/v2/_catalog", nil, "Authorization", "Bearer "+tok)
	if json.Unmarshal(resp.body, &cat); resp.StatusCode != 200 || strings.Join(cat.Repositories, ",") != "team/app" {
		t.Errorf("catalog through a CI token scoped to team/**: %d %v", resp.StatusCode, cat.Repositories)
	}
	d := sha256Of([]byte("layer of secret/x"))
	resp = r.do("POST", "/v2/team/new/blobs/uploads/?mount="+d, nil, "Authorization", "Bearer "+tok)
	if resp.StatusCode != 202 {
		t.Errorf("a mount without from, outside the CI token's scope: %d, want 202 (an upload)", resp.StatusCode)
	}
	d = sha256Of([]byte("layer of team/app"))
	if resp := r.do("POST", "/v2/team/new/blobs/uploads/?mount="+d, nil, "Authorization", "Bearer "+tok); resp.StatusCode != 201 {
		t.Errorf("a mount without from, inside the CI token's scope: %d, want 201", resp.StatusCode)
	}
}

// The token endpoint reads at most a small form, whatever the client sends.
func TestTokenFormIsBounded(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	form := "grant_type=password&username=alice&password=alice-pw&padding=" + strings.Repeat("a", 1<<20)
	resp := r.do("POST", "/token", []byte(form), "Content-Type", "application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(resp.body), "SIZE_INVALID") {
		t.Errorf("a 1 MiB token form: %d %s", resp.StatusCode, resp.body)
	}
	// A chunked body of unknown length is cut off the same way, and the client, still
	// sending far more than the server drains, gets the answer rather than a reset.
	for range 5 {
		req, _ := http.NewRequest("POST", r.url("/token"), io.MultiReader(strings.NewReader(form), bytes.NewReader(make([]byte, 64<<20))))
		req.ContentLength = -1
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		got, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("a chunked 64 MiB token form: %v (the answer was lost)", err)
		}
		got.Body.Close()
		if got.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("a chunked 64 MiB token form: %d", got.StatusCode)
		}
	}
	form = url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-pw"}, "service": {r.addr}}.Encode()
	if resp := r.do("POST", "/token", []byte(form), "Content-Type", "application/x-www-form-urlencoded"); resp.StatusCode != 200 {
		t.Errorf("a normal token form: %d %s", resp.StatusCode, resp.body)
	}
}

// Only blob uploads get the long upload timeout: a manifest body that never arrives
// is cut off by the short read timeout.
func TestOnlyUploadsGetTheUploadTimeout(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
		o.ReadTimeout, o.UploadTimeout = time.Second, time.Hour
	}})
	// The bodies stall past the first 8 KiB, which fasthttp reads before any handler
	// runs (under the short timeout, whatever the route: see TestAnUnauthorisedUploadIsReadUnderTheReadTimeout).
	stalled := func(method, path string) (closed bool) {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 100000\r\n\r\n{"+strings.Repeat(" ", 16<<10))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		var ne net.Error
		return err == nil || !(errors.As(err, &ne) && ne.Timeout())
	}
	if !stalled("PUT", "/v2/a/manifests/v1") {
		t.Error("a stalled manifest body held the connection past the read timeout")
	}
	// An upload chunk that keeps coming, slowly, for longer than the read timeout (one
	// that stops is cut off: TestAStalledUploadIsCutAtTheReadTimeout).
	loc := r.startUpload("a")
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "PATCH "+loc+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 16<<10))
	for range 10 {
		time.Sleep(250 * time.Millisecond)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("a slow upload chunk was cut off after %d more bytes: %v", 0, err)
		}
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("a slow upload chunk was answered or closed after 2.5s of a 1s read timeout: %v", err)
	}
}

// Shutdown waits for open requests until its deadline, then closes their connections
// and waits for the handlers to return: the store is closed next, and never under a
// handler still reading an upload.
func TestShutdownCutsOffHandlersStillRunningAtTheDeadline(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	loc := r.startUpload("a")
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "PATCH "+loc+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nfirst bytes")
	time.Sleep(200 * time.Millisecond) // let the handler start reading the body
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := r.gw.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown with a stalled upload: %v, want the deadline", err)
	}
	// The handler is done: its connection was closed, not left reading.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Error("the stalled upload's connection is still open after Shutdown returned")
	}
	r.gw = nil // stopped; the cleanup closes the store
	if err := r.store.Close(); err != nil {
		t.Fatal(err)
	}
}

type okAdmin struct{}

func (okAdmin) Run(context.Context, string, map[string]string) (any, error) {
	return map[string]bool{"ran": true}, nil
}

// Without authentication the admin endpoint answers loopback clients only. Behind a
// reverse proxy on the same machine every request comes from loopback: the client is
// read from X-Forwarded-For only when the proxy is trusted, and a forwarded request
// from an untrusted peer is never taken for a local one.
func TestAdminLoopbackRuleSeesThroughProxies(t *testing.T) {
	for _, c := range []struct {
		name    string
		trusted []string
		xff     string
		status  int
	}{
		{"direct loopback", nil, "", 200},
		{"forwarded by an untrusted local proxy", nil, "203.0.113.7", 403},
		{"forwarded by a trusted proxy for a remote client", []string{"127.0.0.1"}, "203.0.113.7", 403},
		{"a trusted proxy for a local client", []string{"127.0.0.0/8"}, "127.0.0.5", 200},
		{"a remote client claiming to be local", []string{"127.0.0.1"}, "127.0.0.1, 203.0.113.7", 403},
		{"hops through two trusted proxies", []string{"127.0.0.1", "10.0.0.0/8"}, "203.0.113.7, 10.1.2.3", 403},
		{"a hop no proxy wrote makes the client unknown", []string{"127.0.0.1"}, "127.0.0.9, not-an-address", 403},
		{"a trusted proxy naming no client", []string{"127.0.0.1"}, "", 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
				o.Admin = okAdmin{}
				for _, p := range c.trusted {
					prefix, err := config.ParsePrefix(p)
					if err != nil {
						t.Fatal(err)
					}
					o.TrustedProxies = append(o.TrustedProxies, prefix)
				}
			}})
			var headers []string
			if c.xff != "" {
				headers = []string{"X-Forwarded-For", c.xff}
			}
			if resp := r.do("POST", "/-/admin/gc", nil, headers...); resp.StatusCode != c.status {
				t.Errorf("%d %s, want %d", resp.StatusCode, resp.body, c.status)
			}
		})
	}
}

// Behind a trusted reverse proxy, failed logins lock out the attacker's (user,
// address) pair, read from X-Forwarded-For; the user still logs in from elsewhere.
func TestLockoutBehindATrustedProxyIsPerClient(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic, func(o *gateway.Options) {
		p, _ := config.ParsePrefix("127.0.0.1")
		o.TrustedProxies = []netip.Prefix{p}
	})
	attacker, user := "203.0.113.66", "198.51.100.7"
	for range 5 {
		r.do("GET", "/v2/", nil, "Authorization", basic("alice", "guess"), "X-Forwarded-For", attacker)
	}
	if resp := r.do("GET", "/v2/", nil, "Authorization", basic("alice", "alice-pw"), "X-Forwarded-For", attacker); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the attacker's address, right password: %d, want 429", resp.StatusCode)
	}
	if resp := r.do("GET", "/v2/", nil, "Authorization", basic("alice", "alice-pw"), "X-Forwarded-For", user); resp.StatusCode != 200 {
		t.Errorf("alice from her own address: %d, want 200", resp.StatusCode)
	}
	if resp := r.do("GET", "/v2/", nil, "Authorization", basic("bob", "bob-pw"), "X-Forwarded-For", attacker); resp.StatusCode != 200 {
		t.Errorf("bob behind the attacker's address: %d, want 200", resp.StatusCode)
	}
}

// Revoking a user ends the bearer and refresh tokens issued to them, at once.
func TestRevokedUsersTokensAreRefused(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	seed(r, "Bearer "+mustToken(t, r, basic("alice", "alice-pw"), "repository:team/app:pull,push", "repository:public/img:pull,push", "repository:secret/x:pull,push"))
	form := url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {"bob-pw"},
		"service": {r.addr}, "scope": {"repository:team/app:pull"}, "access_type": {"offline"}}
	resp := r.do("POST", "/token", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	var body struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if json.Unmarshal(resp.body, &body); resp.StatusCode != 200 || body.RefreshToken == "" {
		t.Fatalf("bob's login: %d %s", resp.StatusCode, resp.body)
	}
	if resp := r.do("GET", "/v2/team/app/manifests/v1", nil, "Authorization", "Bearer "+body.AccessToken); resp.StatusCode != 200 {
		t.Fatalf("bob's token before the revocation: %d", resp.StatusCode)
	}
	time.Sleep(1100 * time.Millisecond) // token times have whole seconds
	if _, err := r.auth.RevokeUser(t.Context(), "bob"); err != nil {
		t.Fatal(err)
	}
	if resp := r.do("GET", "/v2/team/app/manifests/v1", nil, "Authorization", "Bearer "+body.AccessToken); resp.StatusCode != 401 {
		t.Errorf("bob's bearer token after the revocation: %d, want 401", resp.StatusCode)
	}
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {body.RefreshToken}, "service": {r.addr}, "scope": {"repository:team/app:pull"}}
	if resp := r.do("POST", "/token", []byte(refresh.Encode()), "Content-Type", "application/x-www-form-urlencoded"); resp.StatusCode != 401 {
		t.Errorf("bob's refresh token after the revocation: %d %s, want 401", resp.StatusCode, resp.body)
	}
	time.Sleep(1100 * time.Millisecond)
	tok := mustToken(t, r, basic("bob", "bob-pw"), "repository:team/app:pull")
	if resp := r.do("GET", "/v2/team/app/manifests/v1", nil, "Authorization", "Bearer "+tok); resp.StatusCode != 200 {
		t.Errorf("a token bob gets after the revocation: %d, want 200", resp.StatusCode)
	}
}

// The store's limits reach clients as OCI errors: too many open uploads from one
// address is 429 TOOMANYREQUESTS, a full disk 507 with a message saying so.
func TestUploadLimitsAnswerWithOCIErrors(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 40)
	r := startRegistry(t, t.TempDir(), registryOptions{store: func(o *cache.Options) {
		o.MaxSessionsPerClient = 2
		o.MinFreeSpace = 1 << 30
		o.FreeSpace = func() (int64, error) { return free.Load(), nil }
	}})
	r.startUpload("a")
	r.startUpload("a")
	resp := r.do("POST", "/v2/a/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(resp.body), "TOOMANYREQUESTS") {
		t.Errorf("a third upload from one address: %d %s", resp.StatusCode, resp.body)
	}
	free.Store(1 << 20)
	b := []byte("a blob for a full disk")
	resp = r.do("POST", "/v2/b/blobs/uploads/?digest="+sha256Of(b), b, "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(string(resp.body), "storage is full") {
		t.Errorf("an upload to a full disk: %d %s", resp.StatusCode, resp.body)
	}
}

// A full disk refuses every write, thousands a second: the refusals are not logged a
// line each (a burst wrote thousands of lines), but the first at once and the rest
// summed up, one line an interval with their count.
func TestRefusalsForAFullDiskAreLoggedOnceAnInterval(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 40)
	var buf syncBuffer
	r := startRegistry(t, t.TempDir(), registryOptions{
		store: func(o *cache.Options) {
			o.MinFreeSpace = 1 << 30
			o.FreeSpace = func() (int64, error) { return free.Load(), nil }
		},
		gateway: func(o *gateway.Options) { o.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) },
	})
	free.Store(1 << 20)
	for range 50 {
		if resp := r.do("POST", "/v2/b/blobs/uploads/", nil); resp.StatusCode != http.StatusInsufficientStorage {
			t.Fatalf("an upload to a full disk: %d %s", resp.StatusCode, resp.body)
		}
	}
	r.stop() // writes the line summing up what the interval held
	var each, summed int
	for _, l := range buf.lines() {
		switch l["msg"] {
		case "request failed":
			each++
		case "requests failed: the storage is full":
			n, _ := l["count"].(float64)
			summed += int(n)
		}
	}
	if each != 1 || summed != 49 {
		t.Errorf("50 refusals logged as %d lines and %d summed up, want 1 and 49:\n%s", each, summed, buf.b.String())
	}
}

// A refused upload request does not keep the upload timeout: a client trickling the
// body of a push it may not make is cut off by the short read timeout.
func TestARefusedUploadIsReadUnderTheReadTimeout(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic, func(o *gateway.Options) { o.ReadTimeout, o.UploadTimeout = time.Second, time.Hour })
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Anonymous: refused with 401 before the body is read. (fasthttp reads the first
	// 8 KiB of a body before any handler runs, under the route's timeout: those are
	// sent; the rest trickles.)
	io.WriteString(c, "POST /v2/team/app/blobs/uploads/?digest=sha256:"+strings.Repeat("a", 64)+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 16<<10))
	c.SetReadDeadline(time.Now().Add(6 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the refused upload still held the connection after 6s (read %q)", b)
	}
	if !strings.Contains(string(b), "401") {
		t.Errorf("answer: %q", b)
	}
}

// An upload nobody authorised gets no more than the read timeout, even while its body
// is still within the first bytes fasthttp reads before the handler (a slowloris
// sending a large Content-Length and a byte now and then).
func TestAnUnauthorisedUploadIsReadUnderTheReadTimeout(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic, func(o *gateway.Options) { o.ReadTimeout, o.UploadTimeout = time.Second, time.Hour })
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1073741824\r\n\r\nx")
	go func() { // a byte every half second
		for range 20 {
			time.Sleep(500 * time.Millisecond)
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(6 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("an unauthorised trickled upload held the connection for 6s (read %q)", b)
	}
}

// A CI token carries the scopes it was made for, and administration is none of them:
// an admin's pull-only CI token, leaked from a pipeline, opens no admin job — neither
// as a Basic password nor through a bearer token it was exchanged for.
func TestCITokensCannotAdminister(t *testing.T) {
	r := authRegistry(t, auth.ModeToken, func(o *gateway.Options) {
		o.Admin = okAdmin{}
		o.Admins = []string{"user:alice"}
	})
	scope, _ := auth.ParseScope("default/team/app:pull")
	secret, _, err := auth.CreateCIToken(tokenStore(r.store), "alice", nil, []auth.Grant{scope}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if resp := r.do("POST", "/-/admin/gc", nil, "Authorization", basic("alice", "alice-pw")); resp.StatusCode != 200 {
		t.Fatalf("alice's own password: %d %s", resp.StatusCode, resp.body)
	}
	if resp := r.do("POST", "/-/admin/gc", nil, "Authorization", basic("alice", secret)); resp.StatusCode != 403 {
		t.Errorf("alice's CI token as a password: %d %s, want 403", resp.StatusCode, resp.body)
	}
	bearer := mustToken(t, r, basic("alice", secret))
	if resp := r.do("POST", "/-/admin/gc", nil, "Authorization", "Bearer "+bearer); resp.StatusCode != 403 {
		t.Errorf("a bearer token from alice's CI token: %d %s, want 403", resp.StatusCode, resp.body)
	}
}

// Revoking one CI token ends the bearer tokens it was exchanged for at once, not at
// their expiry; the user's other tokens keep working.
func TestRevokingACITokenEndsItsBearerTokens(t *testing.T) {
	r := authRegistry(t, auth.ModeToken)
	scope, _ := auth.ParseScope("default/team/**:pull")
	secret, ci, err := auth.CreateCIToken(tokenStore(r.store), "alice", nil, []auth.Grant{scope}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fromCI := "Bearer " + mustToken(t, r, basic("alice", secret), "repository:team/app:pull")
	own := "Bearer " + mustToken(t, r, basic("alice", "alice-pw"), "repository:team/app:pull")
	if resp := r.do("GET", "/v2/team/app/tags/list", nil, "Authorization", fromCI); resp.StatusCode == 401 {
		t.Fatalf("the bearer token from the CI token before revocation: %d %s", resp.StatusCode, resp.body)
	}
	if err := auth.RevokeCIToken(tokenStore(r.store), ci.ID); err != nil {
		t.Fatal(err)
	}
	if resp := r.do("GET", "/v2/team/app/tags/list", nil, "Authorization", fromCI); resp.StatusCode != 401 {
		t.Errorf("the bearer token of a revoked CI token: %d %s, want 401", resp.StatusCode, resp.body)
	}
	if resp := r.do("GET", "/v2/team/app/tags/list", nil, "Authorization", own); resp.StatusCode == 401 {
		t.Errorf("alice's own bearer token after her CI token was revoked: %d", resp.StatusCode)
	}
}
