package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
)

// scrape reads /metrics as alice (an admin) into metric families.
func scrape(t *testing.T, addr, authz string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", authz)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// metricValue is the value of the series of name whose labels include labels (0 when
// there is none).
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	for _, m := range f.Metric {
		match := true
		for k, v := range labels {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// The metrics move by exactly what a scripted workload does: a push and a pull, a
// proxy miss then hit, a garbage collection, a failed login.
func TestMetricsFollowAScriptedWorkload(t *testing.T) {
	storageRefresh = 0 // every scrape sums the storage
	t.Cleanup(func() { storageRefresh = time.Minute })
	up := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(up.Close)
	upImg, err := random.Image(3000, 2)
	if err != nil {
		t.Fatal(err)
	}
	upRef, _ := name.ParseReference(strings.TrimPrefix(up.URL, "http://") + "/lib/img:1")
	if err := remote.Write(upRef, upImg); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), auth.MinBcryptCost)
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	cfgFile := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, `
log: {access: false}
registries:
  - {name: dev, type: hosted}
  - name: hub
    type: proxy
    upstream: {url: %q, tag_ttl: 1h}
routes:
  - {host: "*", registry: dev, namespaces: {hub: hub}}
auth:
  mode: basic
  users_file: %q
  rules:
    - {subjects: [user:alice], registries: ["*"], repositories: ["**"], actions: [pull, push, delete]}
lifecycle:
  admins: [user:alice]
  gc: {grace: 0s}
`, up.URL, users), 0o600)
	addr, a, stop := serveApp(t, cfgFile, filepath.Join(dir, "data"))
	t.Cleanup(stop)
	alice := "Basic YWxpY2U6YWxpY2UtcHc=" // alice:alice-pw
	get := func(method, path, authz string) (int, int64) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		req.Header.Set("Authorization", authz)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, n
	}

	before := scrape(t, addr, alice)

	// A push and a pull of dev/app:1.
	img, err := random.Image(2000, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(addr + "/app:1")
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	var blobBytes int64
	var blobs []string
	cfgName, _ := img.ConfigName()
	cfgSize, _ := img.RawConfigFile()
	blobs, blobBytes = append(blobs, cfgName.String()), int64(len(cfgSize))
	for _, l := range layers {
		d, _ := l.Digest()
		size, _ := l.Size()
		blobs, blobBytes = append(blobs, d.String()), blobBytes+size
	}
	if code, _ := get("GET", "/v2/app/manifests/1", alice); code != 200 {
		t.Fatalf("pull manifest: %d", code)
	}
	var pulled int64
	for _, d := range blobs {
		code, n := get("GET", "/v2/app/blobs/"+d, alice)
		if code != 200 {
			t.Fatalf("pull blob: %d", code)
		}
		pulled += n
	}

	// Through the proxy: a cold pull (misses), then the same again (hits).
	upManifest, _ := upImg.RawManifest()
	upLayers, _ := upImg.Layers()
	upCfg, _ := upImg.ConfigName()
	upBlobs := []string{upCfg.String()}
	for _, l := range upLayers {
		d, _ := l.Digest()
		upBlobs = append(upBlobs, d.String())
	}
	for pass := range 2 {
		if code, n := get("GET", "/v2/hub/lib/img/manifests/1", alice); code != 200 || n != int64(len(upManifest)) {
			t.Fatalf("proxy manifest: %d, %d bytes", code, n)
		}
		for _, d := range upBlobs {
			if code, _ := get("GET", "/v2/hub/lib/img/blobs/"+d, alice); code != 200 {
				t.Fatalf("proxy blob: %d", code)
			}
		}
		if pass == 0 { // the downloads are committed in the background: wait for them
			for _, d := range upBlobs {
				for i := 0; ; i++ {
					if _, err := a.proxies[0].Local().StatBlob(t.Context(), "lib/img", oci.Digest(d)); err == nil {
						break
					}
					if i == 200 {
						t.Fatalf("proxy blob %s never cached", d)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}
	}

	// A garbage collection, and a failed login.
	if code, _ := get("POST", "/-/admin/gc", alice); code != 200 {
		t.Fatalf("gc: %d", code)
	}
	if code, _ := get("GET", "/v2/", "Basic YWxpY2U6bm9wZQ=="); code != 401 { // alice:nope
		t.Fatalf("failed login: %d", code)
	}

	after := scrape(t, addr, alice)
	hub := map[string]string{"registry": "hub"}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range m {
			out[a] = b
		}
		return out
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"dockyard_http_requests_total", map[string]string{"registry": "dev", "route": "manifest", "method": "PUT", "status": "201"}, 1},
		{"dockyard_http_requests_total", map[string]string{"registry": "dev", "route": "blob", "method": "GET", "status": "200"}, float64(len(blobs))},
		{"dockyard_http_response_bytes_total", map[string]string{"registry": "dev", "route": "blob"}, float64(pulled)},
		{"dockyard_proxy_cache_misses_total", with(hub, "kind", "manifest"), 1},
		{"dockyard_proxy_cache_hits_total", with(hub, "kind", "manifest"), 1},
		{"dockyard_proxy_cache_misses_total", with(hub, "kind", "blob"), float64(len(upBlobs))},
		{"dockyard_proxy_cache_hits_total", with(hub, "kind", "blob"), float64(len(upBlobs))},
		{"dockyard_proxy_singleflight_joins_total", hub, 0},
		// the upstream: a ping, the tag's HEAD, the manifest's GET, each blob once
		{"dockyard_upstream_requests_total", hub, float64(3 + len(upBlobs))},
		{"dockyard_upstream_errors_total", hub, 0},
		{"dockyard_upstream_retries_total", with(hub, "kind", "request"), 0},
		{"dockyard_upstream_retries_total", with(hub, "kind", "resume"), 0},
		{"dockyard_gc_runs_total", nil, 1},
		{"dockyard_auth_failures_total", map[string]string{"reason": "credentials"}, 1},
		{"dockyard_uploads_in_flight", nil, 0},
	} {
		if got := metricValue(after, c.name, c.labels) - metricValue(before, c.name, c.labels); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if f := after["dockyard_upstream_retries_total"]; f == nil || len(f.Metric) != 2 {
		t.Errorf("dockyard_upstream_retries_total: %v; want the request and resume kinds of the proxy", f)
	}
	var upBytes int64
	for _, l := range upLayers {
		size, _ := l.Size()
		upBytes += size
	}
	rawUpCfg, _ := upImg.RawConfigFile()
	upBytes += int64(len(rawUpCfg))
	if got := metricValue(after, "dockyard_upstream_response_bytes_total", hub); got < float64(upBytes+int64(len(upManifest))) {
		t.Errorf("upstream bytes %v, want at least the manifest and blobs (%d)", got, upBytes+int64(len(upManifest)))
	}
	if got := metricValue(after, "dockyard_storage_bytes", map[string]string{"registry": "dev"}); got != float64(blobBytes) {
		t.Errorf("dockyard_storage_bytes{registry=dev} = %v, want the pushed blobs' %d", got, blobBytes)
	}
	if got := metricValue(after, "dockyard_job_seconds_total", map[string]string{"job": "gc"}); got <= 0 {
		t.Errorf("gc time not counted: %v", got)
	}
	// Every metric the shipped Grafana dashboard queries is exported.
	dash, err := os.ReadFile("../../configs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	names := regexp.MustCompile(`\b(dockyard|process|go)_[a-z_]+`)
	queried := 0
	for _, p := range board.Panels {
		for _, target := range p.Targets {
			for _, n := range names.FindAllString(target.Expr, -1) {
				queried++
				if after[strings.TrimSuffix(n, "_bucket")] == nil {
					t.Errorf("dashboard panel %q queries %s, which is not exported", p.Title, n)
				}
			}
		}
	}
	if queried < 20 {
		t.Errorf("the dashboard queries only %d metrics", queried)
	}
}
