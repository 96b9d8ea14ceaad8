package gateway_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

// The fuzzers in this file send whole requests to a real gateway over a filesystem
// store, on loopback, one server per fuzzing process. Requests are written by hand on
// a raw connection so that any path and header reach the server as fuzzed.

const fuzzHost = "registry.fuzz"

// fuzzServer is a registry with token auth: anonymous may pull, push and delete in the
// registry "default"; the namespace private/ routes to the registry "vault", where only
// alice may do anything.
type fuzzServer struct {
	r    *testRegistry
	root string // the data directory's parent: nothing may appear there
	key  *ecdsa.PrivateKey
	// Values the fuzzer cannot guess, put in place of {token}, {basic}, {bob}, {refresh},
	// {blob}, {manifest} and {upload}.
	token, refresh, blob, manifest string
	blobBytes                      []byte
	conn                           net.Conn
	br                             *bufio.Reader
}

func startFuzzServer(f *testing.F) *fuzzServer {
	root := f.TempDir()
	dir := filepath.Join(root, "data")
	d := sha256.Sum256([]byte("dockyard gateway fuzzing key: never use outside tests"))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		f.Fatal(err)
	}
	users := filepath.Join(f.TempDir(), "htpasswd")
	var lines string
	for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
		h, _ := bcrypt.GenerateFromPassword([]byte(u[1]), auth.MinBcryptCost)
		lines += u[0] + ":" + string(h) + "\n"
	}
	if err := os.WriteFile(users, []byte(lines), 0o600); err != nil {
		f.Fatal(err)
	}
	all := []auth.Action{auth.Pull, auth.Push, auth.Delete}
	r := startRegistry(f, dir, registryOptions{
		store: func(o *cache.Options) { o.MaxSessionsPerClient = 8 },
		registries: func(store *cache.Store) ([]vhost.Registry, []vhost.Route) {
			return []vhost.Registry{vhost.NewHosted("default", store, vhost.HostedOptions{}), vhost.NewHosted("vault", store, vhost.HostedOptions{})},
				[]vhost.Route{{Host: "*", Registry: "default", Namespaces: map[string]string{"private": "vault"}}}
		},
		auth: func(store *cache.Store) *auth.Service {
			uf, err := auth.NewUsersFile(users)
			if err != nil {
				f.Fatal(err)
			}
			signer, err := auth.NewSigner(key, "dockyard")
			if err != nil {
				f.Fatal(err)
			}
			s, err := auth.NewService(auth.Config{Mode: auth.ModeToken, UsersFile: uf, Tokens: tokenStore(store), Signer: signer,
				TokenTTL: 24 * time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				RateLimit: auth.RateLimit{Failures: 3, Window: time.Minute, Lockout: time.Hour},
				Rules: []auth.Rule{
					{Subjects: []string{"user:alice"}, Grant: auth.Grant{Registries: []string{"*"}, Repositories: []string{"**"}, Actions: all}},
					{Subjects: []string{"user:bob"}, Grant: auth.Grant{Registries: []string{"default"}, Repositories: []string{"team/**"}, Actions: []auth.Action{auth.Pull}}},
					{Subjects: []string{"anonymous"}, Grant: auth.Grant{Registries: []string{"default"}, Repositories: []string{"**"}, Actions: all}},
				}})
			if err != nil {
				f.Fatal(err)
			}
			return s
		},
	})
	s := &fuzzServer{r: r, root: root, key: key, blobBytes: []byte("the blob the fuzzer reads by {blob}, 0123456789")}
	r.headers = []string{"Host", fuzzHost}
	s.blob = r.pushBlob("a", s.blobBytes)
	s.manifest = sha256Of(r.pushImage("a", "v1", []byte(`{"os":"linux"}`), s.blobBytes))
	r.headers = append(r.headers, "Authorization", basic("alice", "alice-pw"))
	r.pushImage("private/app", "v1", []byte(`{"os":"linux"}`), s.blobBytes)
	r.headers = []string{"Host", fuzzHost}
	resp := r.do("GET", "/token?service="+fuzzHost+"&scope=repository:private/app:pull,push,delete", nil, "Authorization", basic("alice", "alice-pw"))
	var tok struct{ Token string }
	if json.Unmarshal(resp.body, &tok); tok.Token == "" {
		f.Fatalf("token: %d %s", resp.StatusCode, resp.body)
	}
	s.token = tok.Token
	resp = r.do("POST", "/token", []byte("grant_type=password&username=alice&password=alice-pw&access_type=offline&service="+fuzzHost),
		"Content-Type", "application/x-www-form-urlencoded")
	var ref struct {
		RefreshToken string `json:"refresh_token"`
	}
	if json.Unmarshal(resp.body, &ref); ref.RefreshToken == "" {
		f.Fatalf("refresh token: %d %s", resp.StatusCode, resp.body)
	}
	s.refresh = ref.RefreshToken
	r.headers = nil
	return s
}

// fill puts the server's secrets and content in place of their placeholders.
func (s *fuzzServer) fill(v string) string {
	if !strings.Contains(v, "{") {
		return v
	}
	return strings.NewReplacer("{token}", s.token, "{refresh}", s.refresh, "{basic}", base64.StdEncoding.EncodeToString([]byte("alice:alice-pw")),
		"{bob}", base64.StdEncoding.EncodeToString([]byte("bob:bob-pw")), "{blob}", s.blob, "{manifest}", s.manifest).Replace(v)
}

// target makes a fuzzed path a request target: bytes a request line cannot carry are
// percent-encoded.
func target(p string) string {
	var b strings.Builder
	if !strings.HasPrefix(p, "/") {
		b.WriteByte('/')
	}
	for i := 0; i < len(p) && i < 2048; i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '#' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

var headerToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// framing headers are the harness's: the fuzzer picks the rest.
var framing = []string{"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "keep-alive", "te", "trailer"}

// headerLines reads "Name: value" lines, keeping those HTTP can carry.
func (s *fuzzServer) headerLines(block string) [][2]string {
	var out [][2]string
	for _, line := range strings.Split(block, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || !headerToken.MatchString(name) || slices.Contains(framing, strings.ToLower(name)) {
			continue
		}
		value = strings.Map(func(r rune) rune {
			if r < ' ' && r != '\t' || r == 0x7f {
				return -1
			}
			return r
		}, s.fill(strings.TrimSpace(value)))
		if len(value) > 4096 {
			value = value[:4096]
		}
		out = append(out, [2]string{name, value})
	}
	return out
}

type fuzzResponse struct {
	status int
	header http.Header
	body   []byte
}

// send writes one request on the kept connection (a new one when the server closed
// it) and reads the answer.
func (s *fuzzServer) send(t *testing.T, method, target string, headers [][2]string, body []byte) fuzzResponse {
	t.Helper()
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, fuzzHost)
	for _, h := range headers {
		fmt.Fprintf(&req, "%s: %s\r\n", h[0], h[1])
	}
	fmt.Fprintf(&req, "Content-Length: %d\r\n\r\n", len(body))
	req.Write(body)
	for attempt := 0; ; attempt++ {
		if s.conn == nil {
			c, err := net.Dial("tcp", s.r.addr)
			if err != nil {
				t.Fatal(err)
			}
			s.conn, s.br = c, bufio.NewReader(c)
		}
		s.conn.SetDeadline(time.Now().Add(time.Minute))
		_, err := s.conn.Write(req.Bytes())
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(s.br, &http.Request{Method: method})
		}
		if err != nil {
			s.conn.Close()
			s.conn = nil
			if attempt == 0 {
				continue // the server had closed the kept connection
			}
			t.Fatalf("%s %s: no answer: %v", method, target, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %s: reading the answer: %v", method, target, err)
		}
		if resp.Close {
			s.conn.Close()
			s.conn = nil
		}
		return fuzzResponse{resp.StatusCode, resp.Header, b}
	}
}

// as sends a request with alice's token (for probes of the server's state).
func (s *fuzzServer) asAlice(t *testing.T, method, target string) fuzzResponse {
	return s.send(t, method, target, [][2]string{{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))}}, nil)
}

// files lists every file under the data directory's parent with its size, but the
// index's own (Badger rewrites them on every change).
func (s *fuzzServer) files(t *testing.T) map[string]int64 {
	out := map[string]int64{}
	index := filepath.Join(s.root, "data", "index")
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == index {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			out[p] = info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// known is every error code the registry answers with.
var known = []string{"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
	"MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED",
	"UNSUPPORTED", "TOOMANYREQUESTS", "NOT_FOUND"}

// checkError asserts an error answer is a registry error: a 4xx (never a 5xx: the input
// was bad, not the server) with an {"errors":[…]} body of known codes.
func checkError(t *testing.T, what string, method string, resp fuzzResponse, challenges ...string) {
	t.Helper()
	if resp.status >= 500 {
		t.Fatalf("%s: %d %s", what, resp.status, resp.body)
	}
	if resp.status < 400 || method == "HEAD" {
		return
	}
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if resp.header.Get("Content-Type") != "application/json" || json.Unmarshal(resp.body, &e) != nil || len(e.Errors) == 0 {
		t.Fatalf("%s: %d with body %q, not a registry error", what, resp.status, resp.body)
	}
	for _, x := range e.Errors {
		if !slices.Contains(known, x.Code) || x.Message == "" {
			t.Fatalf("%s: %d with error %+v", what, resp.status, x)
		}
	}
	// Every 401 carries a challenge: Bearer on the API, Basic at the token endpoint.
	if ch := resp.header.Get("WWW-Authenticate"); resp.status == http.StatusUnauthorized && !slices.ContainsFunc(challenges, func(c string) bool { return strings.HasPrefix(ch, c) }) {
		t.Fatalf("%s: 401 with challenge %q, want one of %q", what, ch, challenges)
	}
}

// signedByUs checks, without golang-jwt, that a JWT carries our key's ES256 signature
// over its own header and payload.
func (s *fuzzServer) signedByUs(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		if sig, err = base64.URLEncoding.DecodeString(parts[2]); err != nil {
			return false
		}
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	return len(sig) == 64 && ecdsa.Verify(&s.key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

// carriesAlice reports whether an Authorization value proves alice: her password, or a
// bearer token our key signed.
func (s *fuzzServer) carriesAlice(authz string) bool {
	authz = strings.TrimSpace(authz)
	if tok, ok := strings.CutPrefix(authz, "Bearer "); ok {
		return s.signedByUs(strings.TrimSpace(tok))
	}
	if b, ok := strings.CutPrefix(authz, "Basic "); ok {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b))
		return err == nil && string(raw) == "alice:alice-pw"
	}
	return false
}

var contentRange = regexp.MustCompile(`^bytes ([0-9]+)-([0-9]+)/([0-9]+)$`)

// Whole requests — any method, path, headers and body — get either a success or a
// registry error (a 4xx with a known code, a Bearer challenge with each 401), never a
// 5xx or a dropped connection. A refused request leaves the store as it was: no file
// appears, grows or goes anywhere under the data directory's parent (blobs, uploads, or
// a path that escaped), and the repository's tags and the body's digest as a manifest
// answer as before. The private registry answers only requests carrying alice's
// password or a token our key signed. A blob served is its digest's bytes, and a
// partial answer is the slice its Content-Range names.
func FuzzRequests(f *testing.F) {
	s := startFuzzServer(f)
	d := "sha256:" + strings.Repeat("a", 64)
	seeds := []struct {
		method, path, headers string
		body                  []byte
	}{
		{"GET", "/v2/", "", nil},
		{"GET", "/v2/_catalog?n=10&last=a", "", nil},
		{"GET", "/v2/a/tags/list?n=1", "", nil},
		{"GET", "/v2/a/manifests/v1", "Accept: application/vnd.oci.image.manifest.v1+json", nil},
		{"HEAD", "/v2/a/manifests/{manifest}", "", nil},
		{"GET", "/v2/a/blobs/{blob}", "Range: bytes=3-9", nil},
		{"GET", "/v2/a/blobs/{blob}", "Range: bytes=-5\nIf-None-Match: \"{blob}\"", nil},
		{"POST", "/v2/a/blobs/uploads/?digest=" + sha256Of([]byte("new blob")), "Content-Type: application/octet-stream", []byte("new blob")},
		{"POST", "/v2/a/blobs/uploads/?digest=" + d, "", []byte("not that digest")},
		{"POST", "/v2/b/blobs/uploads/?mount={blob}&from=a", "", nil},
		{"PATCH", "/v2/a/blobs/uploads/{upload}", "Content-Range: 0-3\nContent-Type: application/octet-stream", []byte("abcd")},
		{"PATCH", "/v2/a/blobs/uploads/{upload}", "Content-Range: 5-8", []byte("abcd")},
		{"PUT", "/v2/a/blobs/uploads/{upload}?digest=" + sha256Of([]byte("abcd")), "", []byte("abcd")},
		{"PUT", "/v2/a/blobs/uploads/{upload}?digest=sha256:zz", "", []byte("abcd")},
		{"DELETE", "/v2/a/blobs/uploads/{upload}", "", nil},
		{"GET", "/v2/a/blobs/uploads/{upload}", "", nil},
		{"PUT", "/v2/a/manifests/v2", "Content-Type: application/vnd.oci.image.manifest.v1+json", imageManifest([]byte(`{"os":"linux"}`), []byte("missing"))},
		{"PUT", "/v2/a/manifests/v2", "Content-Type: application/vnd.oci.image.index.v1+json",
			[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":1}]}`)},
		{"DELETE", "/v2/a/manifests/v1", "", nil},
		{"GET", "/v2/a/referrers/{manifest}?artifactType=x", "", nil},
		{"GET", "/v2/private/app/manifests/v1", "Authorization: Bearer {token}", nil},
		{"GET", "/v2/private/app/tags/list", "", nil},
		{"HEAD", "/v2/private/app/blobs/{blob}", "Authorization: Basic Og==", nil},
		{"PUT", "/v2/private/app/blobs/uploads/x", "Authorization: Basic {basic}", nil},
		{"POST", "/v2/private/app/blobs/uploads/", "Authorization: Bearer {token}x", nil},
		{"GET", "/v2/private/app/tags/list", "Authorization: Basic {bob}", nil},
		{"GET", "/v2/a/tags/list", "Authorization: Bearer", nil},
		{"GET", "/v2/a/tags/list", "Authorization: Digest x", nil},
		{"GET", "/v2/a/../../b/tags/list", "", nil},
		{"PUT", "/v2/a/blobs/uploads/..%2F..%2Fescape?digest=" + d, "", []byte("x")},
		{"GET", "/v2/a%2Fb/blobs/" + d, "", nil},
		{"OPTIONS", "/v2/a/manifests/v1", "Origin: https://x", nil},
		{"GET", "/v1/search?q=a", "", nil},
		{"GET", "/-/api/v1/search?q=a&n=2", "", nil},
		{"GET", "/token?scope=repository:a:pull", "Authorization: x", nil}, // regression: crashed the server (slice out of range)
		{"GET", "/-/admin/gc", "", nil},
	}
	for _, sd := range seeds {
		f.Add(sd.method, sd.path, sd.headers, sd.body)
	}
	f.Fuzz(func(t *testing.T, method, path, headerBlock string, body []byte) {
		method = strings.ToUpper(strings.Map(func(r rune) rune {
			if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' {
				return r
			}
			return -1
		}, method))
		if method == "" || len(method) > 10 || method == "CONNECT" {
			method = "GET"
		}
		if len(body) > 64<<10 {
			body = body[:64<<10]
		}
		var upload string
		if strings.Contains(path, "{upload}") {
			resp := s.send(t, "POST", "/v2/a/blobs/uploads/", nil, nil)
			loc := resp.header.Get("Location")
			if resp.status != http.StatusAccepted || loc == "" {
				t.Fatalf("open an upload: %d %s", resp.status, resp.body)
			}
			upload = loc
			path = strings.ReplaceAll(path, "{upload}", loc[strings.LastIndexByte(loc, '/')+1:])
		}
		tgt := target(s.fill(path))
		headers := s.headerLines(headerBlock)
		authz := ""
		for _, h := range headers {
			if strings.EqualFold(h[0], "Authorization") {
				authz = h[1]
			}
		}
		rawPath, _, _ := strings.Cut(tgt, "?")
		route, routeErr := gateway.ParseRoute(rawPath)
		// The state a refusal must leave: files, the repository's tags, the body as a
		// manifest of the repository.
		var probes []string
		if routeErr == nil && route.Repo != "" {
			probes = []string{"/v2/" + string(route.Repo) + "/tags/list", "/v2/" + string(route.Repo) + "/manifests/" + sha256Of(body)}
		}
		if upload != "" {
			probes = append(probes, upload)
		}
		probe := func() string {
			var out string
			for _, p := range probes {
				r := s.asAlice(t, "GET", p)
				out += fmt.Sprintf("%s → %d %s Range %q\n", p, r.status, r.body, r.header.Get("Range"))
			}
			return out
		}
		filesBefore, stateBefore := s.files(t), probe()

		resp := s.send(t, method, tgt, headers, body)
		what := fmt.Sprintf("%s %s %q", method, tgt, headers)
		checkError(t, what, method, resp, `Bearer realm="`, `Basic realm="`)

		if resp.status >= 400 {
			if after := s.files(t); !sameFiles(s.root, filesBefore, after) {
				t.Fatalf("%s: refused with %d, and the files changed:\nbefore %v\nafter  %v", what, resp.status, filesBefore, after)
			}
			if after := probe(); after != stateBefore {
				t.Fatalf("%s: refused with %d, and the index changed:\nbefore %s\nafter  %s", what, resp.status, stateBefore, after)
			}
		} else if routeErr == nil && strings.HasPrefix(string(route.Repo), "private/") && !s.carriesAlice(authz) {
			t.Fatalf("%s: %d on the private registry without alice's credentials", what, resp.status)
		}
		for p := range s.files(t) {
			if !strings.HasPrefix(p, filepath.Join(s.root, "data")+string(filepath.Separator)) {
				t.Fatalf("%s: file %s outside the data directory", what, p)
			}
		}
		if routeErr == nil && route.Kind == gateway.KindBlob && method == "GET" {
			switch resp.status {
			case http.StatusOK:
				if oci.FromBytes(route.Digest.Algorithm(), resp.body) != route.Digest || resp.header.Get("Docker-Content-Digest") != string(route.Digest) {
					t.Fatalf("%s: 200 with bytes of another digest (header %s)", what, resp.header.Get("Docker-Content-Digest"))
				}
			case http.StatusPartialContent:
				m := contentRange.FindStringSubmatch(resp.header.Get("Content-Range"))
				whole := s.asAlice(t, "GET", rawPath)
				if m == nil || whole.status != 200 {
					t.Fatalf("%s: 206 with Content-Range %q (whole: %d)", what, resp.header.Get("Content-Range"), whole.status)
				}
				first, _ := strconv.Atoi(m[1])
				last, _ := strconv.Atoi(m[2])
				size, _ := strconv.Atoi(m[3])
				if size != len(whole.body) || first > last || last >= size || !bytes.Equal(resp.body, whole.body[first:last+1]) {
					t.Fatalf("%s: 206 %s is not that slice of the %d bytes", what, m[0], len(whole.body))
				}
			}
		}
		// Keep the server small: sessions the request opened or left are cancelled.
		for _, loc := range []string{upload, resp.header.Get("Location")} {
			if strings.Contains(loc, "/blobs/uploads/") {
				if u, err := url.Parse(loc); err == nil {
					s.asAlice(t, "DELETE", u.Path)
				}
			}
		}
	})
}

// sameFiles reports whether two listings hold the same files with the same sizes. An
// upload file may differ in size: a refused chunk can leave bytes past the session's
// offset, which the next resume truncates (the session's state is probed instead).
func sameFiles(root string, a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	uploads := filepath.Join(root, "data", "uploads") + string(filepath.Separator)
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v && !strings.HasPrefix(k, uploads) {
			return false
		}
	}
	return true
}

// The token endpoint, asked anything (GET or POST, any query, credentials and form),
// answers a token or a registry error, never a 5xx; a token it issues is ours, for the
// service asked, naming whom the request proved (alice or bob by password or refresh
// token, else nobody), and grants nothing the rules do not allow that subject.
func FuzzTokenEndpoint(f *testing.F) {
	s := startFuzzServer(f)
	for _, sd := range []struct {
		post         bool
		query, authz string
		body         []byte
	}{
		{false, "service=" + fuzzHost + "&scope=repository:a:pull,push", "", nil},
		{false, "scope=repository:private/app:*&scope=registry:catalog:*", "Basic {basic}", nil},
		{false, "scope=repository:team/x:pull,push,delete&offline_token=true", "Basic {bob}", nil},
		{false, "scope=repository:private/app:pull", "Bearer {token}", nil},
		{false, "scope=registry:catalog:search", "Basic Ym9iOndyb25n", nil},
		{false, "service=other", "x", nil}, // regression: crashed the server; then a 401 without a challenge
		{false, "scope=repository:A:pull&scope=repository::pull&scope=repository:a", "Basic", nil},
		{true, "", "", []byte("grant_type=password&username=alice&password=alice-pw&scope=repository%3Aprivate%2Fapp%3Apull&access_type=offline")},
		{true, "", "", []byte("grant_type=refresh_token&refresh_token={refresh}&service=" + fuzzHost + "&scope=repository:private/x:push")},
		{true, "", "", []byte("grant_type=refresh_token&refresh_token={token}&service=" + fuzzHost)},
		{true, "", "", []byte("grant_type=password&username=bob&password=bob-pw&scope=repository:private/app:pull")},
		{true, "", "", []byte("grant_type=client_credentials")},
		{true, "", "", []byte("%zz")},
	} {
		f.Add(sd.post, sd.query, sd.authz, sd.body)
	}
	f.Fuzz(func(t *testing.T, post bool, query, authz string, body []byte) {
		method, headers := "GET", [][2]string{}
		if post {
			method = "POST"
			headers = append(headers, [2]string{"Content-Type", "application/x-www-form-urlencoded"})
			body = []byte(s.fill(string(body)))
		}
		if authz != "" {
			headers = append(headers, s.headerLines("Authorization: "+authz)...)
			authz = ""
			if len(headers) > 0 && headers[len(headers)-1][0] == "Authorization" {
				authz = headers[len(headers)-1][1] // as sent
			}
		}
		tgt := target("/token?" + s.fill(query))
		resp := s.send(t, method, tgt, headers, body)
		what := fmt.Sprintf("%s %s %q %q", method, tgt, headers, body)
		checkError(t, what, method, resp, `Basic realm="`)
		if resp.status != http.StatusOK {
			return
		}
		var answer struct {
			Token        string `json:"token"`
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			ExpiresIn    int    `json:"expires_in"`
		}
		if err := json.Unmarshal(resp.body, &answer); err != nil || answer.Token == "" || answer.Token != answer.AccessToken || answer.ExpiresIn <= 0 {
			t.Fatalf("%s: answer %s", what, resp.body)
		}
		// Parameters as the server reads them: the form with net/url, the query with
		// fasthttp.
		param := func(k string) string {
			if post {
				form, _ := url.ParseQuery(string(body))
				return form.Get(k)
			}
			var args fasthttp.Args
			_, q, _ := strings.Cut(tgt, "?")
			args.Parse(q)
			return string(args.Peek(k))
		}
		// No token hosts are configured: every token is for the Host asked.
		c, err := s.r.auth.Signer().Verify(answer.Token, fuzzHost)
		if err != nil || !s.signedByUs(answer.Token) {
			t.Fatalf("%s: issued a token that does not verify for %q: %v", what, fuzzHost, err)
		}
		// Whom the request proved, found without the server's help.
		proved := ""
		for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
			basicProof := false
			if b, ok := strings.CutPrefix(authz, "Basic "); ok && !post {
				raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b))
				basicProof = err == nil && string(raw) == u[0]+":"+u[1]
			}
			formProof := post && param("grant_type") == "password" && param("username") == u[0] && param("password") == u[1]
			refreshProof := post && param("grant_type") == "refresh_token" && u[0] == "alice" && s.signedByUs(param("refresh_token"))
			if basicProof || formProof || refreshProof {
				proved = u[0]
			}
		}
		if c.Subject != proved {
			t.Fatalf("%s: a token for %q, the request proved %q", what, c.Subject, proved)
		}
		if answer.RefreshToken != "" && (proved == "" || !(post && param("access_type") == "offline" || !post && param("offline_token") == "true")) {
			t.Fatalf("%s: a refresh token nobody asked for", what)
		}
		for _, a := range c.Access {
			switch a.Type {
			case "registry":
				if a.Name != "catalog" || len(a.Actions) == 0 || slices.ContainsFunc(a.Actions, func(x string) bool { return x != "*" && x != "search" }) {
					t.Fatalf("%s: grants %+v", what, a)
				}
			case "repository":
				if _, err := oci.ParseRepository(a.Name); err != nil {
					t.Fatalf("%s: grants %+v on an invalid name", what, a)
				}
				for _, act := range a.Actions {
					if !s.r.auth.Decide(c.Identity(), a.Registry, a.Repository, auth.Action(act)) {
						t.Fatalf("%s: grants %s on %s/%s to %q, which the rules do not allow", what, act, a.Registry, a.Repository, c.Subject)
					}
				}
			default:
				t.Fatalf("%s: grants %+v", what, a)
			}
		}
	})
}

// A manifest the registry accepts (201) is served byte for byte as pushed, by digest
// and by tag, with the digest of those bytes and the media type it was pushed as; one
// it refuses is a registry error and cannot be read by its digest afterwards (unless
// the same bytes were accepted before).
func FuzzManifestPut(f *testing.F) {
	r := startRegistry(f, f.TempDir(), registryOptions{})
	s := &fuzzServer{r: r}
	config, layer := []byte(`{"architecture":"amd64","os":"linux"}`), []byte("the one layer of the fuzzed manifests")
	image := r.pushImage("fuzz/app", "base", config, layer)
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + sha256Of(config) + `","size":` + strconv.Itoa(len(config)) + `}`
	lay := `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + sha256Of(layer) + `","size":` + strconv.Itoa(len(layer)) + `}`
	child := `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + sha256Of(image) + `","size":` + strconv.Itoa(len(image)) + `,"platform":{"os":"linux","architecture":"amd64"}}`
	for _, sd := range []struct{ ct, body string }{
		{mtOCIManifest, string(image)},
		{mtOCIManifest, `{"schemaVersion":2,"mediaType":"` + mtOCIManifest + `","config":` + cfg + `,"layers":[` + lay + `],"annotations":{"org.opencontainers.image.title":"x"}}`},
		{"application/vnd.docker.distribution.manifest.v2+json", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":` + cfg + `,"layers":[` + lay + `]}`},
		{mtOCIIndex, `{"schemaVersion":2,"mediaType":"` + mtOCIIndex + `","manifests":[` + child + `]}`},
		{"", `{"schemaVersion":2,"manifests":[]}`},
		{mtOCIManifest, `{"schemaVersion":2,"mediaType":"` + mtOCIManifest + `","artifactType":"application/x.sig","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":` + child + `}`},
		{mtOCIManifest, `{"schemaVersion":2,"config":` + cfg + `}` + "\n"},
		{mtOCIManifest, `{"schemaVersion":2,"config":` + cfg + `}}`},
		{mtOCIIndex, string(image)},
		{"text/plain", `{}`},
	} {
		f.Add(sd.ct, []byte(sd.body), false)
		f.Add(sd.ct, []byte(sd.body), true)
	}
	accepted := map[string]bool{sha256Of(image): true} // pushed above
	f.Fuzz(func(t *testing.T, contentType string, body []byte, byDigest bool) {
		d := sha256Of(body)
		ref := "t"
		if byDigest {
			ref = d
		}
		var headers [][2]string
		if hs := s.headerLines("Content-Type: " + contentType); len(hs) > 0 {
			headers = hs
			contentType = hs[0][1] // as sent
		} else {
			contentType = ""
		}
		what := fmt.Sprintf("PUT %q as %q", body, contentType)
		resp := s.send(t, "PUT", "/v2/fuzz/app/manifests/"+ref, headers, body)
		checkError(t, what, "PUT", resp)
		byDig := s.send(t, "GET", "/v2/fuzz/app/manifests/"+d, [][2]string{{"Accept", "*/*"}}, nil)
		if resp.status != http.StatusCreated {
			if resp.status < 400 {
				t.Fatalf("%s: %d", what, resp.status)
			}
			if byDig.status != http.StatusNotFound && !accepted[d] {
				t.Fatalf("%s: refused with %d, and its digest answers %d", what, resp.status, byDig.status)
			}
			return
		}
		accepted[d] = true
		m, err := oci.ParseManifest(contentType, body)
		if err != nil || !json.Valid(body) {
			t.Fatalf("%s: accepted, and it does not parse: %v", what, err)
		}
		if got := resp.header.Get("Docker-Content-Digest"); got != d || !strings.HasSuffix(resp.header.Get("Location"), "/manifests/"+d) {
			t.Fatalf("%s: 201 with digest %q, Location %q; the bytes are %s", what, got, resp.header.Get("Location"), d)
		}
		reads := map[string]fuzzResponse{"by digest": byDig}
		if !byDigest {
			reads["by tag"] = s.send(t, "GET", "/v2/fuzz/app/manifests/t", [][2]string{{"Accept", "*/*"}}, nil)
		}
		for how, g := range reads {
			if g.status != http.StatusOK || !bytes.Equal(g.body, body) || g.header.Get("Docker-Content-Digest") != d || g.header.Get("Content-Type") != m.MediaType {
				t.Fatalf("%s: read %s: %d %s %q, %q", what, how, g.status, g.header.Get("Docker-Content-Digest"), g.header.Get("Content-Type"), g.body)
			}
		}
		head := s.send(t, "HEAD", "/v2/fuzz/app/manifests/"+d, [][2]string{{"Accept", "*/*"}}, nil)
		if head.status != http.StatusOK || head.header.Get("Content-Length") != strconv.Itoa(len(body)) || head.header.Get("Docker-Content-Digest") != d {
			t.Fatalf("%s: HEAD %d, Content-Length %q", what, head.status, head.header.Get("Content-Length"))
		}
	})
}
