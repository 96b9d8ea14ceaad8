package vhost

import (
	"fmt"
	"net"
	"strings"

	"github.com/dockyard/dockyard/oci"
)

// Route sends requests for a host pattern to a registry. Host is an exact name (with
// a port it matches only that port), a wildcard "*.example.com" or "*" for any host. Namespaces send repositories whose
// first component is a key to another registry, without that component:
// {ghcr: ghcr} routes /v2/ghcr/org/img/… to registry ghcr, repository org/img.
type Route struct {
	Host       string
	Registry   string
	Namespaces map[string]string
}

// Router resolves a request's Host header, repository and ns parameter to a virtual
// registry and the repository inside it.
type Router struct {
	exact     map[string]*hostRoute
	wildcards []wildcardRoute // longest suffix first
	fallback  *hostRoute
	upstreams map[string]Registry // proxies by upstream host, for ?ns=
}

type hostRoute struct {
	reg        Registry
	namespaces map[string]Registry
}

type wildcardRoute struct {
	suffix string // ".example.com"
	route  *hostRoute
}

// upstreamer is a registry that caches an upstream (a proxy).
type upstreamer interface {
	UpstreamHost() string
}

// NewRouter builds a router over registries from routes.
func NewRouter(registries []Registry, routes []Route) (*Router, error) {
	byName := map[string]Registry{}
	rt := &Router{exact: map[string]*hostRoute{}, upstreams: map[string]Registry{}}
	for _, r := range registries {
		byName[r.Name()] = r
		if u, ok := r.(upstreamer); ok {
			rt.upstreams[canonicalHost(u.UpstreamHost())] = r
		}
	}
	lookup := func(host, name string) (Registry, error) {
		if reg, ok := byName[name]; ok {
			return reg, nil
		}
		return nil, fmt.Errorf("route for host %q names unknown registry %q", host, name)
	}
	for _, route := range routes {
		reg, err := lookup(route.Host, route.Registry)
		if err != nil {
			return nil, err
		}
		hr := &hostRoute{reg: reg, namespaces: map[string]Registry{}}
		for ns, name := range route.Namespaces {
			if hr.namespaces[ns], err = lookup(route.Host, name); err != nil {
				return nil, err
			}
		}
		switch host := strings.ToLower(route.Host); {
		case host == "*":
			rt.fallback = hr
		case strings.HasPrefix(host, "*."):
			rt.wildcards = append(rt.wildcards, wildcardRoute{suffix: host[1:], route: hr})
		default:
			rt.exact[host] = hr
		}
	}
	// Longest suffix wins: sort by length, descending.
	for i := 1; i < len(rt.wildcards); i++ {
		for j := i; j > 0 && len(rt.wildcards[j].suffix) > len(rt.wildcards[j-1].suffix); j-- {
			rt.wildcards[j], rt.wildcards[j-1] = rt.wildcards[j-1], rt.wildcards[j]
		}
	}
	return rt, nil
}

// canonicalHost names Docker Hub one way, whichever of its hosts is used.
func canonicalHost(h string) string {
	h = strings.ToLower(h)
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// Resolved is where a request goes.
type Resolved struct {
	Registry Registry
	Repo     oci.Repository // the name inside Registry
	// Namespace is the ns parameter when it chose the registry (answered with
	// OCI-Namespace).
	Namespace string
}

// Resolve routes a request for repo on host (a Host header; the port is ignored).
// ns, the source registry containerd names when it uses a mirror, selects the proxy
// of that upstream when there is one.
func (rt *Router) Resolve(host string, repo oci.Repository, ns string) (Resolved, error) {
	if ns != "" {
		if reg, ok := rt.upstreams[canonicalHost(ns)]; ok {
			return Resolved{Registry: reg, Repo: repo, Namespace: ns}, nil
		}
	}
	hr, err := rt.hostRoute(host)
	if err != nil {
		return Resolved{}, err
	}
	if len(hr.namespaces) > 0 {
		first, rest, ok := strings.Cut(string(repo), "/")
		if reg, found := hr.namespaces[first]; found && ok {
			return Resolved{Registry: reg, Repo: oci.Repository(rest)}, nil
		}
	}
	return Resolved{Registry: hr.reg, Repo: repo}, nil
}

// ResolveHost returns the registry serving host.
func (rt *Router) ResolveHost(host string) (Registry, error) {
	hr, err := rt.hostRoute(host)
	if err != nil {
		return nil, err
	}
	return hr.reg, nil
}

func (rt *Router) hostRoute(host string) (*hostRoute, error) {
	host = strings.ToLower(host)
	// A route naming a port matches only that port; others match any port.
	if hr, ok := rt.exact[host]; ok {
		return hr, nil
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if hr, ok := rt.exact[host]; ok {
		return hr, nil
	}
	for _, w := range rt.wildcards {
		if strings.HasSuffix(host, w.suffix) {
			return w.route, nil
		}
	}
	if rt.fallback != nil {
		return rt.fallback, nil
	}
	return nil, oci.ErrNameUnknown.Withf("no registry is served for host %q", host)
}
