package gateway_test

import (
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/dockyard/dockyard/gateway"
)

// recorder is an Events that keeps what it is told and fails while fail is set.
type recorder struct {
	mu   sync.Mutex
	got  []gateway.ManifestEvent
	fail error
}

func (r *recorder) Manifest(e gateway.ManifestEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, e)
	return nil
}

func (r *recorder) take() []gateway.ManifestEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

// The gateway tells of manifest pushes (one per tag set), deletes and pulls, with the
// manifest's digest, type and size and the request's id; HEAD and 304 are not pulls,
// and a push whose event cannot be recorded fails, so its client tries again.
func TestManifestEventsAreToldOncePerPushTagDeleteAndPull(t *testing.T) {
	rec := &recorder{}
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) { o.Events = rec }})
	config, layer := []byte(`{"architecture":"amd64","os":"linux"}`), []byte("layer")
	m := r.pushImage("team/app", "1.0", config, layer)
	d := sha256Of(m)
	r.pushBlob("team/app", config)
	// A Content-Type with a parameter: the event names the manifest's media type.
	if resp := r.do("PUT", "/v2/team/app/manifests/"+d+"?tag=a&tag=b", m, "Content-Type", mtOCIManifest+"; charset=utf-8"); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push by digest with tags: %d %s", resp.StatusCode, resp.body)
	}
	r.do("HEAD", "/v2/team/app/manifests/1.0", nil)
	r.do("GET", "/v2/team/app/manifests/1.0", nil)
	if resp := r.do("GET", "/v2/team/app/manifests/1.0", nil, "If-None-Match", `"`+d+`"`); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET: %d", resp.StatusCode)
	}
	r.do("GET", "/v2/team/app/manifests/nope", nil)
	if resp := r.do("DELETE", "/v2/team/app/manifests/a", nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete tag: %d", resp.StatusCode)
	}

	type short struct{ action, tag, digest string }
	var got []short
	events := rec.take()
	for _, e := range events {
		got = append(got, short{e.Action, e.Tag, string(e.Digest)})
		if e.Registry != "default" || e.Repository != "team/app" || e.RequestID == 0 {
			t.Errorf("event %+v", e)
		}
		if e.Action != gateway.EventDelete && (e.MediaType != mtOCIManifest || e.Size != int64(len(m))) {
			t.Errorf("event without its manifest: %+v", e)
		}
	}
	want := []short{{"push", "1.0", d}, {"push", "a", d}, {"push", "b", d}, {"pull", "1.0", d}, {"delete", "a", ""}}
	if !slices.Equal(got, want) {
		t.Errorf("events %v\nwant   %v", got, want)
	}

	rec.fail = errors.New("index down")
	if resp := r.do("PUT", "/v2/team/app/manifests/2.0", m, "Content-Type", mtOCIManifest); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("a push whose event is not recorded answered %d, want 500", resp.StatusCode)
	}
	if resp := r.do("GET", "/v2/team/app/manifests/1.0", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("a pull whose event is not recorded answered %d, want 200", resp.StatusCode)
	}
	if resp := r.do("DELETE", "/v2/team/app/manifests/"+d, nil); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("a delete whose event is not recorded answered %d, want 500", resp.StatusCode)
	}
}
