package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// healthcheck runs `dockyard healthcheck ARGS...` as main would; err is what makes
// the process exit non-zero, with its message on stderr.
func healthcheck(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(append([]string{"healthcheck"}, args...), &out, &errOut)
	return out.String() + errOut.String(), err
}

// The health check passes on 200 and 401 (a registry with authentication) from /v2/
// and fails, saying why, on anything else: an error status, a redirect, no answer
// within the timeout, nothing listening.
func TestHealthcheck(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok/v2/":
			w.Write([]byte("{}"))
		case "/auth/v2/":
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://x/token",service="x"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "/down/v2/":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/moved/v2/":
			http.Redirect(w, r, "/ok/v2/", http.StatusFound)
		case "/hang/v2/":
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/v2/"
	ln.Close()

	for _, c := range []struct {
		name    string
		args    []string
		healthy bool
		reason  string // in the error's message
	}{
		{"200", []string{"--url", srv.URL + "/ok/v2/"}, true, ""},
		{"401", []string{"--url", srv.URL + "/auth/v2/"}, true, ""},
		{"503", []string{"--url", srv.URL + "/down/v2/"}, false, "503 Service Unavailable"},
		{"404", []string{"--url", srv.URL + "/nothing/v2/"}, false, "404 Not Found"},
		{"redirect", []string{"--url", srv.URL + "/moved/v2/"}, false, "302 Found"},
		{"closed port", []string{"--url", closed}, false, "connection refused"},
		{"no answer in time", []string{"--url", srv.URL + "/hang/v2/", "--timeout", "200ms"}, false, "Timeout"},
		{"bad argument", []string{"--url", srv.URL + "/ok/v2/", "extra"}, false, `unexpected argument "extra"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			out, err := healthcheck(c.args...)
			if c.healthy {
				if err != nil {
					t.Fatalf("unhealthy: %v", err)
				}
				if !strings.Contains(out, "healthy") {
					t.Errorf("output %q", out)
				}
				return
			}
			if err == nil {
				t.Fatalf("healthy (output %q), want a failure", out)
			}
			if !strings.Contains(err.Error(), c.reason) {
				t.Errorf("error %q does not say %q", err, c.reason)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// The default timeout is the documented 3 s.
func TestHealthcheckDefaultTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 3s")
	}
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	_, err := healthcheck("--url", srv.URL+"/v2/")
	if err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Errorf("a server that never answers: %v, want a timeout (3s by default)", err)
	}
}

// Against the real server: the embedded default answers 200, a configuration with
// token authentication 401; both are healthy.
func TestHealthcheckAgainstDockyard(t *testing.T) {
	for _, f := range []string{"../../configs/dockyard.yaml", "../../configs/auth.yaml"} {
		addr, stop := serveWith(t, f, t.TempDir())
		for _, path := range []string{"/v2/", "/-/ready"} {
			out, err := healthcheck("--url", "http://"+addr+path)
			if err != nil {
				t.Errorf("%s %s: %v", f, path, err)
			} else {
				t.Logf("%s %s: %s", f, path, strings.TrimSpace(out))
			}
		}
		stop()
	}
}
