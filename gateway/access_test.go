package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/gateway"
)

// syncBuffer is a bytes.Buffer written by the server and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// One access-log line per request: who (the authenticated user, the client address
// behind a trusted proxy), what (registry, route, repository, reference), how it went
// (status, bytes) — and never the credentials or the query string.
func TestTheAccessLogHasALinePerRequestAndNoSecrets(t *testing.T) {
	var buf syncBuffer
	r := authRegistry(t, auth.ModeBasic, func(o *gateway.Options) {
		o.AccessLog = slog.New(slog.NewJSONHandler(&buf, nil))
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	alice := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	r.do("POST", "/v2/team/app/blobs/uploads/?digest=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", []byte("{}"),
		"Authorization", alice, "Content-Type", "application/octet-stream")
	if resp := r.do("PUT", "/v2/team/app/manifests/1.0", manifest, "Authorization", alice,
		"Content-Type", "application/vnd.oci.image.manifest.v1+json", "X-Forwarded-For", "203.0.113.7"); resp.StatusCode != 201 {
		t.Fatalf("push: %d %s", resp.StatusCode, resp.body)
	}
	r.do("GET", "/v2/team/app/manifests/1.0?access_token=query-secret", nil, "Authorization", alice,
		"Accept", "application/vnd.oci.image.manifest.v1+json", "User-Agent", "test-agent/1")
	r.do("GET", "/v2/team/app/tags/list", nil, "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:wrong-pw")))

	lines := buf.lines()
	if len(lines) != 4 {
		t.Fatalf("%d access lines for 4 requests: %v", len(lines), lines)
	}
	put, get, denied := lines[1], lines[2], lines[3]
	for _, c := range []struct {
		line       map[string]any
		key, value string
	}{
		{put, "msg", "access"}, {put, "user", "alice"}, {put, "registry", "default"}, {put, "route", "manifest"},
		{put, "repository", "team/app"}, {put, "reference", "1.0"}, {put, "method", "PUT"},
		{put, "remote", "203.0.113.7"}, // the client behind the trusted proxy
		{get, "remote", "127.0.0.1"}, {get, "user_agent", "test-agent/1"}, {get, "route", "manifest"},
		{denied, "user", "-"}, {denied, "route", "tags"},
	} {
		if got, _ := c.line[c.key].(string); got != c.value {
			t.Errorf("%s = %q, want %q in %v", c.key, got, c.value, c.line)
		}
	}
	if put["status"] != float64(201) || get["status"] != float64(200) || denied["status"] != float64(401) {
		t.Errorf("statuses %v %v %v", put["status"], get["status"], denied["status"])
	}
	if get["bytes"] != float64(len(manifest)) {
		t.Errorf("bytes of the manifest GET: %v, want %d", get["bytes"], len(manifest))
	}
	if put["request_id"] == get["request_id"] {
		t.Error("two requests share a request id")
	}
	all := buf.b.String()
	for _, secret := range []string{"alice-pw", "wrong-pw", "query-secret", "access_token", base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))} {
		if strings.Contains(all, secret) {
			t.Errorf("the access log holds %q", secret)
		}
	}
}
