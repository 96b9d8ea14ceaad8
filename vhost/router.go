package vhost

import (
	"fmt"
	"net"
	"strings"

	"github.com/dockyard/dockyard/oci"
)

// Route sends requests for a host pattern to a registry. Host is an exact name,
// a wildcard "*.example.com" or "*" for any host.
type Route struct {
	Host     string
	Registry string
}

// Router resolves a request's Host header to a virtual registry.
type Router struct {
	exact     map[string]Registry
	wildcards []wildcardRoute // longest suffix first
	fallback  Registry
}

type wildcardRoute struct {
	suffix string // ".example.com"
	reg    Registry
}

// NewRouter builds a router over registries from routes.
func NewRouter(registries []Registry, routes []Route) (*Router, error) {
	byName := map[string]Registry{}
	for _, r := range registries {
		byName[r.Name()] = r
	}
	rt := &Router{exact: map[string]Registry{}}
	for _, route := range routes {
		reg, ok := byName[route.Registry]
		if !ok {
			return nil, fmt.Errorf("route for host %q names unknown registry %q", route.Host, route.Registry)
		}
		host := strings.ToLower(route.Host)
		switch {
		case host == "*":
			rt.fallback = reg
		case strings.HasPrefix(host, "*."):
			rt.wildcards = append(rt.wildcards, wildcardRoute{suffix: host[1:], reg: reg})
		default:
			rt.exact[host] = reg
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

// Resolve returns the registry serving host (a Host header, port ignored) and the
// repository name inside it.
func (rt *Router) Resolve(host string, repo oci.Repository) (Registry, oci.Repository, error) {
	reg, err := rt.ResolveHost(host)
	return reg, repo, err
}

// ResolveHost returns the registry serving host.
func (rt *Router) ResolveHost(host string) (Registry, error) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	if reg, ok := rt.exact[host]; ok {
		return reg, nil
	}
	for _, w := range rt.wildcards {
		if strings.HasSuffix(host, w.suffix) {
			return w.reg, nil
		}
	}
	if rt.fallback != nil {
		return rt.fallback, nil
	}
	return nil, oci.ErrNameUnknown.Withf("no registry is served for host %q", host)
}
