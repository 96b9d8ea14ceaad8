package gateway_test

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
)

// behindProxy makes the loopback peer a trusted proxy, so that X-Forwarded-For names
// the client.
func behindProxy(o *gateway.Options) {
	o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
}

// An anonymous client's open uploads are counted by its address as the connection
// limits count it: an IPv6 /64, whichever addresses in it the uploads come from.
func TestUploadSessionsAreCountedPerIPv6Slash64(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: behindProxy, store: func(o *cache.Options) { o.MaxSessionsPerClient = 2 }})
	var statuses []int
	for i := range 3 {
		resp := r.do("POST", "/v2/a/blobs/uploads/", nil, "X-Forwarded-For", "2001:db8:1:2::"+strconv.Itoa(i+1))
		statuses = append(statuses, resp.StatusCode)
	}
	if statuses[0] != 202 || statuses[1] != 202 || statuses[2] != 429 {
		t.Errorf("three uploads from one /64: %v, want [202 202 429]", statuses)
	}
	if resp := r.do("POST", "/v2/a/blobs/uploads/", nil, "X-Forwarded-For", "2001:db8:1:3::1"); resp.StatusCode != 202 {
		t.Errorf("an upload from the next /64: %d %s", resp.StatusCode, resp.body)
	}
}

// Failed logins lock out a (user, address) pair, the address an IPv6 /64: a client
// moving through its /64 gets no new budget of guesses.
func TestFailedLoginsAreCountedPerIPv6Slash64(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic, behindProxy)
	for i := range 5 {
		r.do("GET", "/v2/", nil, "Authorization", basic("alice", "guess"), "X-Forwarded-For", "2001:db8:1:2::"+strconv.Itoa(i+1))
	}
	resp := r.do("GET", "/v2/", nil, "Authorization", basic("alice", "alice-pw"), "X-Forwarded-For", "2001:db8:1:2::99")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("after 5 failures from one /64: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := r.do("GET", "/v2/", nil, "Authorization", basic("alice", "alice-pw"), "X-Forwarded-For", "2001:db8:1:3::1"); resp.StatusCode != 200 {
		t.Errorf("alice from another /64: %d %s", resp.StatusCode, resp.body)
	}
}

// Basic credentials on any endpoint are a password check, under http.rate_limit like
// the token endpoint: over it 429 before the check. A login the server remembers
// (checked a moment ago) costs no check and is not limited.
func TestPasswordChecksOnAnyEndpointAreRateLimited(t *testing.T) {
	r := authRegistry(t, auth.ModeBasic, func(o *gateway.Options) {
		o.Limits = gateway.Limits{RatePerSecond: 0.01, RateBurst: 3}
	})
	if resp := r.do("GET", "/v2/", nil, "Authorization", basic("bob", "bob-pw")); resp.StatusCode != 200 {
		t.Fatalf("bob: %d %s", resp.StatusCode, resp.body)
	}
	for i := range 2 { // distinct names: no lockout
		if resp := r.do("GET", "/v2/", nil, "Authorization", basic("guess"+strconv.Itoa(i), "x")); resp.StatusCode != 401 {
			t.Errorf("guess %d: %d %s", i, resp.StatusCode, resp.body)
		}
	}
	resp := r.do("GET", "/v2/team/app/tags/list", nil, "Authorization", basic("guess9", "x"))
	if resp.StatusCode != 429 || errorCode(t, string(resp.body)) != "TOOMANYREQUESTS" || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(resp.body), "http.rate_limit") {
		t.Errorf("a 4th password check: %d %s", resp.StatusCode, resp.body)
	}
	for range 5 {
		if resp := r.do("GET", "/v2/", nil, "Authorization", basic("bob", "bob-pw")); resp.StatusCode != 200 {
			t.Errorf("bob, remembered: %d %s", resp.StatusCode, resp.body)
		}
	}
}
