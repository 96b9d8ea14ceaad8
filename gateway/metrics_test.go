package gateway_test

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/gateway"
)

// metric reads one sample (name with its labels, as Prometheus prints them) from a
// scrape of /metrics; 0 when absent.
func metric(t *testing.T, r *testRegistry, sample string) float64 {
	t.Helper()
	resp := r.do("GET", "/metrics", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.body)
	}
	sc := bufio.NewScanner(bytes.NewReader(resp.body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// The request metrics move with real requests, by registry, route, method and status,
// with bytes in and out; repositories never become labels.
func TestRequestMetricsMoveWithTraffic(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) { o.Metrics, o.MetricsOnMain = true, true }})
	const put201 = `dockyard_http_requests_total{method="PUT",registry="default",route="manifest",status="201"}`
	const get200 = `dockyard_http_requests_total{method="GET",registry="default",route="manifest",status="200"}`
	const get404 = `dockyard_http_requests_total{method="GET",registry="default",route="manifest",status="404"}`
	const out = `dockyard_http_response_bytes_total{registry="default",route="manifest"}`
	const in = `dockyard_http_request_bytes_total{registry="default",route="uploads"}`
	before := map[string]float64{}
	for _, s := range []string{put201, get200, get404, out, in} {
		before[s] = metric(t, r, s)
	}
	empty := "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + empty + `","size":2},"layers":[]}`)
	r.do("POST", "/v2/team/app/blobs/uploads/?digest="+empty, []byte("{}"), "Content-Type", "application/octet-stream")
	if resp := r.do("PUT", "/v2/team/app/manifests/1.0", manifest, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); resp.StatusCode != 201 {
		t.Fatalf("push: %d %s", resp.StatusCode, resp.body)
	}
	for range 3 {
		r.do("GET", "/v2/team/app/manifests/1.0", nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	}
	r.do("GET", "/v2/team/app/manifests/nope", nil)
	for s, want := range map[string]float64{put201: 1, get200: 3, get404: 1, in: 2} {
		if got := metric(t, r, s) - before[s]; got != want {
			t.Errorf("%s moved by %v, want %v", s, got, want)
		}
	}
	if got := metric(t, r, out) - before[out]; got < float64(3*len(manifest)) {
		t.Errorf("response bytes moved by %v, want at least %d", got, 3*len(manifest))
	}
	body := string(r.do("GET", "/metrics", nil).body)
	if strings.Contains(body, "team/app") {
		t.Error("a repository name is a metric label")
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "dockyard_http_request_duration_seconds_bucket", "dockyard_http_requests_in_flight"} {
		if !strings.Contains(body, name) {
			t.Errorf("no %s in /metrics", name)
		}
	}
}
