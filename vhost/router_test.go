package vhost

import (
	"testing"

	"github.com/dockyard/dockyard/oci"
)

// fakeRegistry satisfies Registry by embedding; only Name is used by the router.
type fakeRegistry struct {
	Registry
	name, upstream string
}

func (f fakeRegistry) Name() string { return f.name }

type fakeProxy struct{ fakeRegistry }

func (f fakeProxy) UpstreamHost() string { return f.upstream }

func TestRouterResolvesHostsNamespacesAndNs(t *testing.T) {
	regs := []Registry{
		fakeRegistry{name: "dev"}, fakeRegistry{name: "all"}, fakeRegistry{name: "fallback"},
		fakeProxy{fakeRegistry{name: "hub", upstream: "registry-1.docker.io"}},
		fakeProxy{fakeRegistry{name: "ghcr", upstream: "ghcr.io"}},
	}
	rt, err := NewRouter(regs, []Route{
		{Host: "dev.example.com", Registry: "dev"},
		{Host: "dev.example.com:6000", Registry: "fallback"},
		{Host: "*.example.com", Registry: "all", Namespaces: map[string]string{"hub": "hub"}},
		{Host: "*.eu.example.com", Registry: "ghcr"},
		{Host: "*", Registry: "fallback"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		host, repo, ns    string
		reg, inner, nsOut string
	}{
		{"dev.example.com:5000", "a/b", "", "dev", "a/b", ""},
		{"DEV.example.com", "a/b", "", "dev", "a/b", ""},
		{"dev.example.com:6000", "a/b", "", "fallback", "a/b", ""}, // a route with a port wins for that port
		{"x.example.com", "a/b", "", "all", "a/b", ""},
		{"x.example.com", "hub/library/alpine", "", "hub", "library/alpine", ""},
		{"x.example.com", "hub", "", "all", "hub", ""}, // a bare namespace is a repository name
		{"x.eu.example.com", "a", "", "ghcr", "a", ""}, // longest wildcard wins
		{"other.org", "a", "", "fallback", "a", ""},
		{"other.org", "library/alpine", "docker.io", "hub", "library/alpine", "docker.io"},
		{"other.org", "org/x", "ghcr.io", "ghcr", "org/x", "ghcr.io"},
		{"other.org", "org/x", "quay.io", "fallback", "org/x", ""}, // unknown ns: ignored
	}
	for _, c := range cases {
		res, err := rt.Resolve(c.host, oci.Repository(c.repo), c.ns)
		if err != nil || res.Registry.Name() != c.reg || string(res.Repo) != c.inner || res.Namespace != c.nsOut {
			t.Errorf("%s %s ns=%q: got %v/%s ns=%q %v; want %s/%s ns=%q", c.host, c.repo, c.ns,
				res.Registry, res.Repo, res.Namespace, err, c.reg, c.inner, c.nsOut)
		}
	}
	if _, err := NewRouter(regs, []Route{{Host: "*", Registry: "missing"}}); err == nil {
		t.Error("a route to an unknown registry was accepted")
	}
	noDefault, _ := NewRouter(regs, []Route{{Host: "a.test", Registry: "dev"}})
	if _, err := noDefault.Resolve("b.test", "x", ""); err == nil {
		t.Error("an unrouted host resolved")
	}
}
