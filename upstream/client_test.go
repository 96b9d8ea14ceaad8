package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/oci"
)

const manifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`

// basicUpstream answers like a registry behind htpasswd: Basic auth, user "u" / "p".
func basicUpstream(t *testing.T, handler http.HandlerFunc) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "u" || pass != "p" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/v2/" {
			return
		}
		handler(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestBasicAuthAndDigestVerification(t *testing.T) {
	d := oci.FromBytes(oci.SHA256, []byte(manifest))
	s := basicUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", oci.MediaTypeOCIIndex)
		switch {
		case strings.HasSuffix(r.URL.Path, "/manifests/good"):
			w.Header().Set("Docker-Content-Digest", string(d))
			io.WriteString(w, manifest)
		case strings.HasSuffix(r.URL.Path, "/manifests/lying"):
			w.Header().Set("Docker-Content-Digest", string(d))
			io.WriteString(w, manifest+" ")
		case strings.HasSuffix(r.URL.Path, "/manifests/broken"):
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	c, err := New(Config{URL: s.URL, Username: "u", Password: "p", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.GetManifest(t.Context(), "org/app", "good")
	if err != nil || m.Digest != d || m.MediaType != oci.MediaTypeOCIIndex {
		t.Fatalf("GET with Basic credentials: %+v %v", m, err)
	}
	if _, err := c.GetManifest(t.Context(), "org/app", "lying"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bytes not matching Docker-Content-Digest: %v", err)
	}
	if _, err := c.GetManifest(t.Context(), "org/app", "broken"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("5xx: %v", err)
	}
	var se *StatusError
	if _, err := c.GetManifest(t.Context(), "org/app", "missing"); !errors.As(err, &se) || se.Status != 404 {
		t.Errorf("404: %v", err)
	}

	wrong, _ := New(Config{URL: s.URL, Username: "u", Password: "wrong", Timeout: time.Second})
	if _, err := wrong.GetManifest(t.Context(), "org/app", "good"); !errors.As(err, &se) || se.Status != 401 {
		t.Errorf("wrong password: %v", err)
	}
	anonymous, _ := New(Config{URL: s.URL, Timeout: time.Second})
	if _, err := anonymous.GetManifest(t.Context(), "org/app", "good"); !errors.As(err, &se) || se.Status != 401 {
		t.Errorf("anonymous against an authenticated upstream: %v", err)
	}
}

func TestStalledDownloadFailsAfterTheTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := basicUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		<-release
	})
	c, _ := New(Config{URL: s.URL, Username: "u", Password: "p", Timeout: 200 * time.Millisecond})
	body, _, err := c.GetBlob(context.Background(), "org/app", oci.FromBytes(oci.SHA256, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if _, err := io.ReadAll(body); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("stalled body: %v", err)
	}
}

func TestUnreachableUpstreamIsUnavailable(t *testing.T) {
	c, _ := New(Config{URL: "http://127.0.0.1:1", Timeout: time.Second})
	if _, err := c.HeadManifest(t.Context(), "a", "b"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("connection refused: %v", err)
	}
}

func TestDockerHubOfficialImagesLiveUnderLibrary(t *testing.T) {
	c, _ := New(Config{URL: "https://registry-1.docker.io"})
	if got := c.upstreamRepo("alpine"); got != "library/alpine" {
		t.Errorf("alpine → %s", got)
	}
	if got := c.upstreamRepo("library/alpine"); got != "library/alpine" {
		t.Errorf("library/alpine → %s", got)
	}
	other, _ := New(Config{URL: "https://ghcr.io"})
	if got := other.upstreamRepo("alpine"); got != "alpine" {
		t.Errorf("ghcr alpine → %s", got)
	}
}

// A resume answered 206 with another range than the one asked for (a broken cache in
// front of the upstream) starts over without Range, skipping what was read.
func TestAResumeAnsweredWithAnotherRangeStartsOver(t *testing.T) {
	blob := []byte(strings.Repeat("0123456789", 1000))
	d := oci.FromBytes(oci.SHA256, blob)
	var mu sync.Mutex
	var ranges []string
	s := basicUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		n := len(ranges)
		mu.Unlock()
		w.Header().Set("Content-Length", "10000")
		switch n {
		case 1: // cut short: the server closes the connection
			w.Write(blob[:4000])
		case 2: // the whole blob as a 206 "from 0"
			w.Header().Set("Content-Range", "bytes 0-9999/10000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob)
		default:
			w.Write(blob)
		}
	})
	var waits []time.Duration
	c, _ := New(Config{URL: s.URL, Username: "u", Password: "p", Timeout: 5 * time.Second, Retry: Retry{
		Sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}})
	body, size, err := c.GetBlob(t.Context(), "org/app", d)
	if err != nil || size != 10000 {
		t.Fatalf("GetBlob: %d %v", size, err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || string(got) != string(blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"", "bytes=4000-", ""}; strings.Join(ranges, ",") != strings.Join(want, ",") {
		t.Errorf("requests' ranges: %q, want %q", ranges, want)
	}
	if len(waits) != 2 || c.Stats().Resumes.Load() != 2 {
		t.Errorf("%d waits, %d resumes; want 2 each", len(waits), c.Stats().Resumes.Load())
	}
}

func TestRetryAfterIsSecondsOrADate(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		h    string
		want time.Duration
		ok   bool
	}{
		{"7", 7 * time.Second, true},
		{" 0 ", 0, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"2000000", maxRetryAfter, true},
		{"99999999999999999999999", maxRetryAfter, true},
		{now.AddDate(100, 0, 0).Format(http.TimeFormat), maxRetryAfter, true},
		{"-1", 0, false},
		{"soon", 0, false},
	} {
		if got, ok := parseRetryAfter(c.h, now); got != c.want || ok != c.ok {
			t.Errorf("Retry-After %q: %s %v, want %s %v", c.h, got, ok, c.want, c.ok)
		}
	}
}

// An http:// upstream that redirects blobs to an https:// CDN (or any other host): the
// CDN's requests and bytes are the upstream's traffic and are counted. Only
// go-containerregistry's https probe of the http:// upstream is not.
func TestTrafficRedirectedToAnotherSchemeIsCounted(t *testing.T) {
	blob := []byte(strings.Repeat("cdn bytes ", 5000))
	d := oci.FromBytes(oci.SHA256, blob)
	cdn := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(blob) }))
	t.Cleanup(cdn.Close)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.Redirect(w, r, cdn.URL+"/blob", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(s.Close)
	c, _ := New(Config{URL: s.URL, Insecure: true, Timeout: 5 * time.Second})
	body, _, err := c.GetBlob(t.Context(), "org/app", d)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, body)
	body.Close()
	if err != nil || n != int64(len(blob)) {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	st := c.Stats()
	if st.Bytes.Load() < n {
		t.Errorf("%d response bytes counted; the CDN alone sent %d", st.Bytes.Load(), n)
	}
	// The ping over http, the blob GET answered 307, the CDN's GET; not the https probe.
	if st.Requests.Load() != 3 || st.Errors.Load() != 0 {
		t.Errorf("%d requests and %d errors counted, want 3 and 0", st.Requests.Load(), st.Errors.Load())
	}
}

// An upstream that honours Range but cuts every response after a while: a download
// whose every response brings ResumeProgress bytes is followed to the end, however many
// requests it takes; one whose responses bring less fails within the budget.
func TestACutOnEveryResponseIsFollowedWhileEachMakesProgress(t *testing.T) {
	blob := make([]byte, 1<<20)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	d := oci.FromBytes(oci.SHA256, blob)
	for _, c := range []struct {
		name     string
		cut      int
		requests int64 // made in all
		whole    bool
	}{
		{"64 KiB per response", ResumeProgress, 16, true},
		{"1 KiB per response", 1 << 10, DefaultAttempts, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var requests atomic.Int64
			s := basicUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				var from int
				if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &from); err == nil {
					w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(blob)-1, len(blob)))
					w.Header().Set("Content-Length", strconv.Itoa(len(blob)-from))
					w.WriteHeader(http.StatusPartialContent)
				} else {
					w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
				}
				w.Write(blob[from:min(from+c.cut, len(blob))]) // then the server closes the connection
			})
			c0, _ := New(Config{URL: s.URL, Username: "u", Password: "p", Timeout: 5 * time.Second, Retry: Retry{
				Sleep: func(context.Context, time.Duration) error { return nil }}})
			body, _, err := c0.GetBlob(t.Context(), "org/app", d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(body)
			body.Close()
			if whole := err == nil && string(got) == string(blob); whole != c.whole {
				t.Errorf("read %d of %d bytes (%v); want the whole blob: %v", len(got), len(blob), err, c.whole)
			}
			if n := requests.Load(); n != c.requests {
				t.Errorf("%d requests for the blob, want %d", n, c.requests)
			}
		})
	}
}

// A manifest trickled one byte at a time, each within the timeout, fails once the
// timeout has passed since its headers, and is not asked for again: it does not hold
// the request (and every one waiting for the same tag) for as long as the upstream
// trickles.
func TestATrickledManifestFailsWithinTheTimeout(t *testing.T) {
	var gets atomic.Int64
	over := make(chan struct{}) // the test is over: stop trickling
	s := basicUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		w.Header().Set("Content-Length", "100000")
		for range 100000 {
			if _, err := w.Write([]byte{' '}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-time.After(50 * time.Millisecond):
			case <-r.Context().Done():
				return
			case <-over:
				return
			}
		}
	})
	t.Cleanup(func() { close(over) }) // before the server's cleanup, which waits for the handler
	const timeout = 300 * time.Millisecond
	c, _ := New(Config{URL: s.URL, Username: "u", Password: "p", Timeout: timeout, Retry: Retry{
		Sleep: func(context.Context, time.Duration) error { return nil }}})
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := c.GetManifest(context.Background(), "org/app", "latest")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("a trickled manifest: %v, want ErrUnavailable", err)
		}
		t.Logf("failed after %s: %v", time.Since(start), err)
	case <-time.After(30 * timeout):
		t.Fatalf("GetManifest of a trickled manifest still running after %s (the timeout is %s)", 30*timeout, timeout)
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("%d GETs of a manifest too slow to arrive, want 1", n)
	}
}

// A 429 or 503 whose Retry-After is beyond MaxRetryAfter, however long, is passed on at
// once with it, not asked again; an unreadable one is as if unsaid (retried after the
// backoff) and not passed on.
func TestALongRetryAfterIsPassedOnAtOnce(t *testing.T) {
	for _, c := range []struct {
		status     int
		retryAfter string
		requests   int64
		passedOn   string
	}{
		{429, "3600", 1, "3600"},
		{429, "2000000", 1, "2000000"},
		{429, "99999999999999999999999", 1, "99999999999999999999999"},
		{503, "60", 1, "60"},
		{503, "soon", DefaultAttempts, ""},
		{429, "-5", DefaultAttempts, ""},
	} {
		var requests atomic.Int64
		s := basicUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			w.Header().Set("Retry-After", c.retryAfter)
			w.WriteHeader(c.status)
		})
		cl, _ := New(Config{URL: s.URL, Username: "u", Password: "p", Timeout: 5 * time.Second, Retry: Retry{
			Sleep: func(context.Context, time.Duration) error { return nil }}})
		_, err := cl.HeadBlob(t.Context(), "org/app", oci.FromBytes(oci.SHA256, nil))
		var got string
		var se *StatusError
		var fe *FailingError
		switch {
		case errors.As(err, &se) && se.Status == c.status:
			got = se.RetryAfter
		case errors.As(err, &fe) && errors.Is(err, ErrUnavailable) && c.status >= 500:
			got = fe.RetryAfter
		default:
			t.Errorf("%d Retry-After %q: %v", c.status, c.retryAfter, err)
		}
		if n := requests.Load(); n != c.requests || got != c.passedOn {
			t.Errorf("%d Retry-After %q: asked %d times, Retry-After passed on %q; want %d, %q",
				c.status, c.retryAfter, n, got, c.requests, c.passedOn)
		}
	}
}
