package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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
