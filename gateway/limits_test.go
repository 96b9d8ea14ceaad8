package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
)

// dialFrom opens a connection to addr from the loopback address src (127.0.0.0/8 is
// all loopback: each address is another client).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// clientFrom is an HTTP client whose connections come from src.
func clientFrom(src string) *http.Client {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// exchange sends a raw request on c and reads the answer (the connection may be
// closed after it).
func exchange(t *testing.T, c net.Conn, req string) (*http.Response, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return readAnswer(t, c)
}

func readAnswer(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// errorCode is the code of an OCI error body.
func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("not an OCI error body: %q", body)
	}
	return e.Errors[0].Code
}

const getBase = "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"

// Connections are bounded per address and in all. One over the per-address limit is
// answered 429 TOOMANYREQUESTS with Retry-After and closed, while other addresses are
// served; a trusted proxy, which carries many clients, is not held to it; one over the
// total is answered 503. A closed connection frees its place.
func TestConnectionsAreLimitedPerAddressAndInAll(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
		o.Limits = gateway.Limits{MaxConns: 8, MaxConnsPerIP: 3}
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}
		o.Metrics, o.MetricsOnMain = true, true
	}})
	// open admits one more connection from src, kept alive after its request.
	open := func(src string) net.Conn {
		t.Helper()
		c := dialFrom(t, src, r.addr)
		if resp, body := exchange(t, c, getBase); resp.StatusCode != 200 {
			t.Fatalf("connection from %s: %d %s", src, resp.StatusCode, body)
		}
		return c
	}
	var first []net.Conn
	for range 3 {
		first = append(first, open("127.0.0.2"))
	}
	resp, body := exchange(t, dialFrom(t, "127.0.0.2", r.addr), getBase)
	if resp.StatusCode != 429 || errorCode(t, body) != "TOOMANYREQUESTS" || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(body, "http.max_conns_per_ip") {
		t.Errorf("a 4th connection from one address: %d %q (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	for range 4 { // over the per-address limit, from a trusted proxy
		open("127.0.0.9")
	}
	open("127.0.0.3") // the 8th
	resp, body = exchange(t, dialFrom(t, "127.0.0.4", r.addr), getBase)
	if resp.StatusCode != 503 || errorCode(t, body) != "UNKNOWN" || !strings.Contains(body, "http.max_conns") {
		t.Errorf("a 9th connection: %d %q", resp.StatusCode, body)
	}
	for _, c := range first {
		c.Close()
	}
	// The closed connections' places are free again, for the address and in all.
	var again net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c := dialFrom(t, "127.0.0.2", r.addr)
		if resp, _ := exchange(t, c, getBase); resp.StatusCode == 200 {
			again = c
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("closed connections did not free their places")
		}
	}
	again.Close()
	for _, limit := range []string{"max_conns", "max_conns_per_ip"} {
		if n := metric(t, r, `dockyard_http_connections_refused_total{limit="`+limit+`"}`); n < 1 {
			t.Errorf("refusals over %s counted: %v", limit, n)
		}
	}
}

// The catalog, search and the token endpoint cost the server more than a pull: each
// client address has a token bucket for them. Past it: 429 TOOMANYREQUESTS with
// Retry-After, for that address only. X-Forwarded-For names the client only when it
// comes from a trusted proxy.
func TestCostlyRequestsAreRateLimitedPerClient(t *testing.T) {
	r := authRegistry(t, auth.ModeToken, func(o *gateway.Options) {
		// No refill to speak of during the test: the burst is what is counted.
		o.Limits = gateway.Limits{RatePerSecond: 0.01, RateBurst: 3}
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}
	})
	alice := basic("alice", "alice-pw")
	get := func(src, path string, headers ...string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", r.url(path), nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := clientFrom(src).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for _, path := range []string{"/token?service=" + r.addr, "/v2/_catalog", "/-/api/v1/search?q=app"} {
		if code, _, body := get("127.0.0.2", path, "Authorization", alice); code != 200 {
			t.Fatalf("%s within the burst: %d %s", path, code, body)
		}
	}
	code, h, body := get("127.0.0.2", "/v1/search?q=app", "Authorization", alice)
	retry, _ := strconv.Atoi(h.Get("Retry-After"))
	if code != 429 || errorCode(t, body) != "TOOMANYREQUESTS" || retry < 1 || !strings.Contains(body, "http.rate_limit") {
		t.Errorf("a 4th costly request: %d %q (Retry-After %q)", code, body, h.Get("Retry-After"))
	}
	if code, _, _ := get("127.0.0.2", "/v2/_catalog", "Authorization", alice, "X-Forwarded-For", "10.1.1.1"); code != 429 {
		t.Errorf("X-Forwarded-For from an untrusted peer made another client: %d", code)
	}
	if code, _, _ := get("127.0.0.2", "/v2/team/app/tags/list", "Authorization", alice); code == 429 {
		t.Error("a tag listing (not costly) was rate limited")
	}
	if code, _, _ := get("127.0.0.3", "/v2/_catalog", "Authorization", alice); code != 200 {
		t.Errorf("another address: %d", code)
	}
	// Behind a trusted proxy each forwarded client has its own bucket.
	for i := range 4 {
		code, _, _ := get("127.0.0.9", "/v2/_catalog", "Authorization", alice, "X-Forwarded-For", "10.1.1.1")
		if want := map[bool]int{true: 200, false: 429}[i < 3]; code != want {
			t.Errorf("forwarded request %d of 10.1.1.1: %d, want %d", i+1, code, want)
		}
	}
	if code, _, _ := get("127.0.0.9", "/v2/_catalog", "Authorization", alice, "X-Forwarded-For", "10.1.1.2"); code != 200 {
		t.Errorf("another client behind the trusted proxy: %d", code)
	}
}

// Request headers are bounded (16 KiB by default, room for long bearer tokens): over
// it, 431 with an OCI error naming the setting.
func TestRequestHeadersAreBounded(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	long := "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + strings.Repeat("a", 12<<10) + "\r\n\r\n"
	if resp, body := exchange(t, dialFrom(t, "127.0.0.1", r.addr), long); resp.StatusCode != 200 {
		t.Errorf("a 12 KiB Authorization header: %d %s", resp.StatusCode, body)
	}
	tooLong := "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Filler: " + strings.Repeat("a", 17<<10) + "\r\n\r\n"
	resp, body := exchange(t, dialFrom(t, "127.0.0.1", r.addr), tooLong)
	if resp.StatusCode != 431 || errorCode(t, body) != "SIZE_INVALID" || !strings.Contains(body, "http.max_header_size") {
		t.Errorf("17 KiB of headers: %d %q", resp.StatusCode, body)
	}
	small := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) { o.MaxHeaderSize = 4 << 10 }})
	if resp, _ := exchange(t, dialFrom(t, "127.0.0.1", small.addr), long); resp.StatusCode != 431 {
		t.Errorf("12 KiB of headers with max_header_size 4 KiB: %d", resp.StatusCode)
	}
}

// A slowloris — a connection that sends nothing, or trickles its headers a byte at
// a time — is answered 408 and closed at the header timeout, even with a long read
// timeout; so is a kept-alive connection's next request. The header timeout covers
// the headers only: a body may then take the read timeout.
func TestSlowHeadersAreCutAtTheHeaderTimeout(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
		o.HeaderTimeout, o.ReadTimeout, o.UploadTimeout = time.Second, time.Hour, time.Hour
	}})
	// cut reports whether the server answered 408 and closed c while the client went on
	// trickling the request's headers (never finishing them).
	cut := func(c net.Conn, trickle bool) bool {
		t.Helper()
		stop := make(chan struct{})
		defer close(stop)
		if trickle {
			go func() {
				io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
						if _, err := c.Write([]byte("a")); err != nil {
							return
						}
					}
				}
			}()
		}
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("no answer before the test gave up: %v", err)
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 408 || errorCode(t, string(b)) != "UNKNOWN" || !strings.Contains(string(b), "http.header_timeout") {
			t.Errorf("answer: %d %q", resp.StatusCode, b)
		}
		_, err = c.Read(make([]byte, 1))
		return err == io.EOF
	}
	if !cut(dialFrom(t, "127.0.0.1", r.addr), true) {
		t.Error("a connection trickling its headers was not closed")
	}
	if !cut(dialFrom(t, "127.0.0.1", r.addr), false) {
		t.Error("a connection sending nothing was not closed")
	}
	kept := dialFrom(t, "127.0.0.1", r.addr)
	if resp, _ := exchange(t, kept, getBase); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	if !cut(kept, true) {
		t.Error("a kept-alive connection trickling its next request was not closed")
	}
	// Headers in time, the manifest body after longer than the header timeout.
	empty := "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	r.do("POST", "/v2/team/app/blobs/uploads/?digest="+empty, []byte("{}"), "Content-Type", "application/octet-stream")
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + empty + `","size":2},"layers":[]}`
	c := dialFrom(t, "127.0.0.1", r.addr)
	io.WriteString(c, "PUT /v2/team/app/manifests/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: "+strconv.Itoa(len(manifest))+"\r\n\r\n")
	time.Sleep(1500 * time.Millisecond)
	if resp, body := exchange(t, c, manifest); resp.StatusCode != 201 {
		t.Errorf("a body sent after the header timeout, within the read timeout: %d %s", resp.StatusCode, body)
	}
}

// An upload gets the upload timeout as a whole, but each next bytes must come within
// the read timeout: one that stops sending is answered 408 and closed then, and its
// client's place is free again.
func TestAStalledUploadIsCutAtTheReadTimeout(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
		o.ReadTimeout, o.UploadTimeout = time.Second, time.Hour
	}})
	loc := r.startUpload("a")
	c := dialFrom(t, "127.0.0.1", r.addr)
	// Past the 8 KiB fasthttp reads before the handler, then nothing.
	io.WriteString(c, "PATCH "+loc+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 64<<10))
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, body := readAnswer(t, c)
	if resp.StatusCode != 408 || errorCode(t, body) != "UNKNOWN" || !strings.Contains(body, "http.read_timeout") {
		t.Errorf("a stalled upload: %d %q", resp.StatusCode, body)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the stalled upload's connection was not closed: %v", err)
	}
	// The session is still there: the client may resume where the server stopped.
	if resp := r.do("GET", loc, nil); resp.StatusCode != 204 {
		t.Errorf("the upload after the stall: %d %s", resp.StatusCode, resp.body)
	}
}

// Requests other than blob uploads and manifests may declare a body of at most
// http.max_body_size: over it, 413 SIZE_INVALID before the body is read. Blob uploads
// and manifests keep their own limits.
func TestSmallBodiesAreBounded(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
		o.Limits = gateway.Limits{MaxBodySize: 1 << 10}
	}})
	big := []byte(strings.Repeat("x", 2<<10))
	resp := r.do("GET", "/v2/_catalog", big)
	if resp.StatusCode != 413 || errorCode(t, string(resp.body)) != "SIZE_INVALID" || !strings.Contains(string(resp.body), "http.max_body_size") {
		t.Errorf("a 2 KiB body on the catalog: %d %s", resp.StatusCode, resp.body)
	}
	// 1 GiB declared, 16 KiB sent (fasthttp waits for the first 8 KiB): the answer
	// comes without waiting for more.
	c := dialFrom(t, "127.0.0.1", r.addr)
	if resp, _ := exchange(t, c, "POST /-/admin/gc HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"+strings.Repeat("x", 16<<10)); resp.StatusCode != 413 {
		t.Errorf("1 GiB declared on the admin endpoint: %d", resp.StatusCode)
	}
	// Blobs of 2 KiB each, and a manifest of ten of them, over 1 KiB too.
	var layers [][]byte
	for i := range 10 {
		layers = append(layers, []byte(strings.Repeat(strconv.Itoa(i), 2<<10)))
	}
	if m := r.pushImage("team/app", "1", []byte(`{"architecture":"amd64","os":"linux"}`), layers...); len(m) <= 1<<10 {
		t.Fatalf("the manifest is only %d bytes", len(m))
	}
}

// Over the limit of open uploads per client, a new one is refused 429
// TOOMANYREQUESTS with Retry-After.
func TestTooManyUploadsSaysWhenToRetry(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{store: func(o *cache.Options) { o.MaxSessionsPerClient = 2 }})
	r.startUpload("a")
	r.startUpload("a")
	resp := r.do("POST", "/v2/a/blobs/uploads/", nil)
	if resp.StatusCode != 429 || errorCode(t, string(resp.body)) != "TOOMANYREQUESTS" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a 3rd upload: %d %s (Retry-After %q)", resp.StatusCode, resp.body, resp.Header.Get("Retry-After"))
	}
}

// The connection limits are live: a reload turning one on applies it to the
// connections already open (they were counted all along), and turning it off lets
// the next connection in.
func TestConnectionLimitsChangeWithAReload(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	for range 3 {
		if resp, _ := exchange(t, dialFrom(t, "127.0.0.2", r.addr), getBase); resp.StatusCode != 200 {
			t.Fatalf("no limit: %d", resp.StatusCode)
		}
	}
	l := r.gw.Live()
	l.Limits.MaxConnsPerIP = 3
	r.gw.Reload(l)
	if resp, _ := exchange(t, dialFrom(t, "127.0.0.2", r.addr), getBase); resp.StatusCode != 429 {
		t.Errorf("a 4th connection after a reload set the limit to 3: %d", resp.StatusCode)
	}
	if resp, _ := exchange(t, dialFrom(t, "127.0.0.3", r.addr), getBase); resp.StatusCode != 200 {
		t.Errorf("another address: %d", resp.StatusCode)
	}
	l.Limits.MaxConnsPerIP = 0
	r.gw.Reload(l)
	if resp, _ := exchange(t, dialFrom(t, "127.0.0.2", r.addr), getBase); resp.StatusCode != 200 {
		t.Errorf("after a reload removed the limit: %d", resp.StatusCode)
	}
}

// A client that asks before sending a body ("Expect: 100-continue") is refused at once
// when the limits would refuse the body: 413, never invited to send it. A body within
// them is invited.
func TestABodyTooLargeIsRefusedBeforeItIsSent(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{maxManifestSize: 1 << 10, gateway: func(o *gateway.Options) {
		o.Limits = gateway.Limits{MaxBodySize: 1 << 10}
	}})
	for _, c := range []struct{ name, head, code string }{
		{"a 2 MiB body on the admin endpoint", "POST /-/admin/gc HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n", "SIZE_INVALID"},
		{"a 2 KiB manifest", "PUT /v2/a/manifests/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 2048\r\n", "MANIFEST_INVALID"},
	} {
		c1 := dialFrom(t, "127.0.0.1", r.addr)
		resp, body := exchange(t, c1, c.head+"Expect: 100-continue\r\n\r\n")
		if resp.StatusCode != 413 || errorCode(t, body) != c.code {
			t.Errorf("%s: %d %q, want 413 %s", c.name, resp.StatusCode, body, c.code)
		}
	}
	c1 := dialFrom(t, "127.0.0.1", r.addr)
	c1.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c1, "POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n")
	line, _ := bufio.NewReader(c1).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Errorf("a blob upload of 4 KiB: %q, want 100 Continue", line)
	}
}
