package vhost_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/upstream"
	"github.com/dockyard/dockyard/vhost"
)

// startNexus serves the Nexus-style layout: hosted dev and prod, a proxy of u, and the
// group all = dev → prod → up pushing to dev. Hosts: dev.test, prod.test, up.test, and
// every other host reaches the group (with namespace "up" for the proxy).
func startNexus(t *testing.T, u *testUpstream) (*server, map[string]string) {
	t.Helper()
	s := startServer(t, func(store *cache.Store) ([]vhost.Registry, []vhost.Route) {
		client, err := upstream.New(upstream.Config{URL: u.URL, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		dev := vhost.NewHosted("dev", store, vhost.HostedOptions{})
		prod := vhost.NewHosted("prod", store, vhost.HostedOptions{})
		up := vhost.NewProxy("up", store, client, vhost.ProxyOptions{TagTTL: time.Hour, Logger: testLogger()})
		all := vhost.NewGroup("all", []vhost.Registry{dev, prod, up}, dev, nil)
		return []vhost.Registry{dev, prod, up, all}, []vhost.Route{
			{Host: "dev.test", Registry: "dev"}, {Host: "prod.test", Registry: "prod"}, {Host: "up.test", Registry: "up"},
			{Host: "*", Registry: "all", Namespaces: map[string]string{"up": "up"}},
		}
	})
	// Clients name registries by host; the test reaches them all on one address.
	return s, map[string]string{"dev": "dev.test", "prod": "prod.test", "up": "up.test"}
}

// resolveVia returns the digest a manifest HEAD through host resolves to.
func resolveVia(s *server, host, repo, ref string) (string, int) {
	r := get("HEAD", "http://"+s.addr+"/v2/"+repo+"/manifests/"+ref, "Host", host, "Accept", "*/*")
	return r.header.Get("Docker-Content-Digest"), r.status
}

func TestGroupResolvesTagsInMemberOrderAndPushesToItsPushMember(t *testing.T) {
	u := newTestUpstream(t)
	s, hosts := startNexus(t, u)
	devImg, prodImg, prodOnly, upOnly := randomImage(t, 512, 1), randomImage(t, 512, 1), randomImage(t, 512, 1), randomImage(t, 512, 1)

	// Push straight to dev and prod: the group's address serves them all, so pushes
	// name the member by Host.
	pushVia := func(host, tag string, img v1.Image) {
		t.Helper()
		if err := remote.Write(ref(t, s.addr+"/team/app:"+tag), img, remote.WithTransport(hostRewriter(host))); err != nil {
			t.Fatalf("push %s to %s: %v", tag, host, err)
		}
	}
	pushVia(hosts["dev"], "1.0", devImg)
	pushVia(hosts["prod"], "1.0", prodImg)
	pushVia(hosts["prod"], "0.9", prodOnly)
	if err := remote.Write(ref(t, u.host()+"/team/app:upstream-only"), upOnly); err != nil {
		t.Fatal(err)
	}

	if d, _ := resolveVia(s, "registry.test", "team/app", "1.0"); d != digestOf(t, devImg) {
		t.Errorf("a tag in dev and prod resolves to %s, want dev's %s", d, digestOf(t, devImg))
	}
	if d, _ := resolveVia(s, "registry.test", "team/app", "0.9"); d != digestOf(t, prodOnly) {
		t.Errorf("a tag only in prod resolves to %s", d)
	}
	if d, _ := resolveVia(s, "registry.test", "team/app", "upstream-only"); d != digestOf(t, upOnly) {
		t.Errorf("a tag only upstream resolves to %s", d)
	}
	// A digest only prod has resolves through the group too.
	if d, st := resolveVia(s, "registry.test", "team/app", digestOf(t, prodImg)); st != 200 || d != digestOf(t, prodImg) {
		t.Errorf("prod's digest through the group: %d %s", st, d)
	}
	// Pulled through and cached by the proxy member (manifest, config and every layer):
	// served whole with the upstream down.
	pulled, err := remote.Image(ref(t, s.addr+"/team/app:upstream-only"))
	if err != nil {
		t.Fatalf("pull through the group: %v", err)
	}
	if err := validate.Image(pulled); err != nil {
		t.Fatalf("pull through the group: %v", err)
	}
	u.set(func(u *testUpstream) { u.failing = true })
	cached, err := remote.Image(ref(t, s.addr+"/team/app@"+digestOf(t, upOnly)))
	if err == nil {
		err = validate.Image(cached)
	}
	if err != nil {
		t.Errorf("cached upstream image with the upstream down: %v", err)
	}
	u.set(func(u *testUpstream) { u.failing = false })

	// A push through the group lands in dev, not prod.
	pushed := randomImage(t, 512, 1)
	if err := remote.Write(ref(t, s.addr+"/team/new:1"), pushed); err != nil {
		t.Fatalf("push through the group: %v", err)
	}
	if d, st := resolveVia(s, hosts["dev"], "team/new", "1"); st != 200 || d != digestOf(t, pushed) {
		t.Errorf("pushed through the group, dev has %d %s", st, d)
	}
	if _, st := resolveVia(s, hosts["prod"], "team/new", "1"); st != 404 {
		t.Errorf("pushed through the group, prod answers %d", st)
	}

	// The tag list is the union of the members'.
	r := get("GET", "http://"+s.addr+"/v2/team/app/tags/list", "Host", "registry.test")
	var tl struct{ Tags []string }
	json.Unmarshal(r.body, &tl)
	if strings.Join(tl.Tags, ",") != "0.9,1.0,upstream-only" {
		t.Errorf("union of tags: %s", r.body)
	}
	// The proxy is reachable inside the group's host under its namespace.
	if d, st := resolveVia(s, "registry.test", "up/team/app", "upstream-only"); st != 200 || d != digestOf(t, upOnly) {
		t.Errorf("namespace route to the proxy: %d %s", st, d)
	}
	// containerd's ns parameter selects the proxy of that upstream.
	r = get("HEAD", "http://"+s.addr+"/v2/team/app/manifests/upstream-only?ns="+u.host(), "Accept", "*/*")
	if r.status != 200 || r.header.Get("OCI-Namespace") != u.host() {
		t.Errorf("ns parameter: %d OCI-Namespace %q", r.status, r.header.Get("OCI-Namespace"))
	}
}

// hostRewriter sends every request with the given Host header.
type hostRewriter string

func (h hostRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = string(h)
	return http.DefaultTransport.RoundTrip(r)
}

func TestGroupWithoutPushMemberDeniesPushes(t *testing.T) {
	s := startServer(t, func(store *cache.Store) ([]vhost.Registry, []vhost.Route) {
		a := vhost.NewHosted("a", store, vhost.HostedOptions{})
		g := vhost.NewGroup("g", []vhost.Registry{a}, nil, nil)
		return []vhost.Registry{a, g}, []vhost.Route{{Host: "*", Registry: "g"}}
	})
	r := get("POST", "http://"+s.addr+"/v2/x/blobs/uploads/")
	if r.status != 403 || !strings.Contains(string(r.body), "DENIED") {
		t.Errorf("push to a group without push_to: %d %s", r.status, r.body)
	}
}

// Docker Hub answers 401 (after granting an anonymous token) and ghcr.io 403 for
// repositories they do not have. Inside a group that means "not here": the dev-only
// repository lists its dev tags, a tag nobody has is 404 MANIFEST_UNKNOWN, and what the
// upstream does have still comes through.
func TestGroupTreatsUpstreamRefusalsOfUnknownRepositoriesAsNotHere(t *testing.T) {
	for _, refusal := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(http.StatusText(refusal), func(t *testing.T) {
			u := newTestUpstream(t)
			s, hosts := startNexus(t, u)
			devImg, upImg := randomImage(t, 512, 1), randomImage(t, 512, 1)
			if err := remote.Write(ref(t, s.addr+"/team/devonly:1.0"), devImg, remote.WithTransport(hostRewriter(hosts["dev"]))); err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref(t, u.host()+"/lib/tool:2.0"), upImg); err != nil {
				t.Fatal(err)
			}
			u.set(func(u *testUpstream) { u.unknownRepo = refusal })
			via := func(method, path string) httpResult {
				return get(method, "http://"+s.addr+path, "Host", "registry.test", "Accept", "*/*")
			}
			if r := via("GET", "/v2/team/devonly/tags/list"); r.status != 200 || !strings.Contains(string(r.body), `"1.0"`) {
				t.Errorf("tags of a dev-only repository: %d %s", r.status, r.body)
			}
			for _, path := range []string{"/v2/team/devonly/manifests/9.9", "/v2/nobody/has/manifests/latest"} {
				if r := via("GET", path); r.status != 404 || !strings.Contains(string(r.body), "MANIFEST_UNKNOWN") {
					t.Errorf("GET %s: %d %s, want 404 MANIFEST_UNKNOWN", path, r.status, r.body)
				}
				if r := via("HEAD", path); r.status != 404 {
					t.Errorf("HEAD %s: %d, want 404", path, r.status)
				}
			}
			if r := via("GET", "/v2/nobody/has/tags/list"); r.status != 404 || !strings.Contains(string(r.body), "NAME_UNKNOWN") {
				t.Errorf("tags of a repository nobody has: %d %s", r.status, r.body)
			}
			if r := via("GET", "/v2/nobody/has/blobs/"+digestOf(t, upImg)); r.status != 404 || !strings.Contains(string(r.body), "BLOB_UNKNOWN") {
				t.Errorf("a blob of a repository nobody has: %d %s", r.status, r.body)
			}
			if r := via("GET", "/v2/team/devonly/referrers/"+digestOf(t, devImg)); r.status != 200 {
				t.Errorf("referrers of a dev manifest: %d %s", r.status, r.body)
			}
			if r := via("GET", "/v2/_catalog"); r.status != 200 || !strings.Contains(string(r.body), "team/devonly") {
				t.Errorf("catalog: %d %s", r.status, r.body)
			}
			if d, st := resolveVia(s, "registry.test", "lib/tool", "2.0"); st != 200 || d != digestOf(t, upImg) {
				t.Errorf("an upstream image through the group: %d %s", st, d)
			}
			if r := via("GET", "/v2/lib/tool/tags/list"); r.status != 200 || !strings.Contains(string(r.body), `"2.0"`) {
				t.Errorf("tags of an upstream repository: %d %s", r.status, r.body)
			}
		})
	}
}

// Pull records count GETs of a manifest, exactly once each, whichever kind of registry
// serves it; HEADs (update checkers) are not pulls.
func TestPullsAreRecordedExactlyAndHeadsAreNot(t *testing.T) {
	u := newTestUpstream(t)
	s, hosts := startNexus(t, u)
	upImg, devImg := randomImage(t, 512, 1), randomImage(t, 512, 1)
	if err := remote.Write(ref(t, u.host()+"/rec/app:v1"), upImg); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, s.addr+"/rec/dev:v1"), devImg, remote.WithTransport(hostRewriter(hosts["dev"]))); err != nil {
		t.Fatal(err)
	}
	manifest := func(method, host, repo string) {
		t.Helper()
		r := get(method, "http://"+s.addr+"/v2/"+repo+"/manifests/v1", "Host", host, "Accept", "*/*")
		if r.status != 200 {
			t.Fatalf("%s %s via %s: %d %s", method, repo, host, r.status, r.body)
		}
	}
	for _, c := range []struct{ host, repo string }{
		{hosts["up"], "rec/app"},     // the proxy itself
		{"registry.test", "rec/app"}, // the group, through the proxy
		{hosts["dev"], "rec/dev"},    // a hosted registry
		{"registry.test", "rec/dev"}, // the group, through the hosted member
	} {
		manifest("GET", c.host, c.repo)
		for range 4 {
			manifest("HEAD", c.host, c.repo)
		}
	}
	if err := s.store.FlushAccess(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		reg, repo string
		img       v1.Image
	}{{"up", "rec/app", upImg}, {"dev", "rec/dev", devImg}} {
		m, tagged, err := s.store.PullInfo(t.Context(), c.reg, c.repo, "v1", oci.Digest(digestOf(t, c.img)))
		if err != nil {
			t.Fatal(err)
		}
		if tagged.Pulls != 2 || tagged.PulledAt == 0 || m.Pulls != 2 || m.PulledAt == 0 {
			t.Errorf("%s/%s: want 2 pulls (two GETs, HEADs not counted), got manifest %+v, tag %+v", c.reg, c.repo, m, tagged)
		}
	}
}

// A proxy shares the blob store with hosted registries; it must never hand out a blob
// it has not been shown the upstream repository holds, least of all while the upstream
// cannot be asked.
func TestProxyNeverServesOtherRegistriesBlobs(t *testing.T) {
	u := newTestUpstream(t)
	s, hosts := startNexus(t, u)
	private := randomImage(t, 2048, 1)
	if err := remote.Write(ref(t, s.addr+"/team/secret:1"), private, remote.WithTransport(hostRewriter(hosts["dev"]))); err != nil {
		t.Fatal(err)
	}
	layers, _ := private.Layers()
	d := digestOf(t, layers[0])
	for _, failing := range []bool{false, true} {
		u.set(func(u *testUpstream) { u.failing = failing })
		for _, repo := range []string{"team/secret", "other/repo"} {
			for _, method := range []string{"GET", "HEAD"} {
				r := get(method, "http://"+s.addr+"/v2/"+repo+"/blobs/"+d, "Host", hosts["up"])
				if r.status == 200 {
					t.Errorf("upstream failing=%v: %s %s through the proxy served dev's blob", failing, method, repo)
				}
			}
		}
	}
}
