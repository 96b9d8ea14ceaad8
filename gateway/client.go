package gateway

import (
	"net"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"
)

// clientIP is the address of the client a request comes from. Behind a load balancer
// or TLS terminator the peer is the proxy: when it is one of Options.TrustedProxies, the
// client is the last address in X-Forwarded-For that is not itself a trusted proxy
// (each proxy appends the address it received the request from, so the addresses left
// of the first untrusted one were written by the client and prove nothing).
func (g *Gateway) clientIP(ctx *fasthttp.RequestCtx) netip.Addr {
	peer := peerAddr(ctx)
	if !g.trustedProxy(ctx, peer) {
		return peer
	}
	var hops []string
	for _, v := range ctx.Request.Header.PeekAll("X-Forwarded-For") {
		hops = append(hops, strings.Split(string(v), ",")...)
	}
	if len(hops) == 0 {
		// Through a trusted proxy that named no client (it sets another header, or
		// none): the client is unknown, not the proxy (which may well be local).
		return netip.Addr{}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			// Not written by a proxy of ours: the client is unknown, and an unknown
			// client is neither local nor anyone in particular.
			return netip.Addr{}
		}
		client = a
		if !g.trustedProxy(ctx, a) {
			break
		}
	}
	return client
}

// clientKey is what per-client limits (open uploads, login lockouts) count the
// request's client by, as text: its address as the connection limits and the rate
// limit count it (addrKey: an IPv4 address, an IPv6 /64), or "unknown".
func (g *Gateway) clientKey(ctx *fasthttp.RequestCtx) string {
	a := g.clientIP(ctx)
	switch {
	case !a.IsValid():
		return "unknown"
	case a.Is4():
		return a.String()
	}
	return addrKey(a).String()
}

// forwardedByUntrusted reports whether a request says it was forwarded (it names
// another client) while its peer is not a trusted proxy: a local reverse proxy that
// is not configured as trusted must not make remote clients look local.
func (g *Gateway) forwardedByUntrusted(ctx *fasthttp.RequestCtx) bool {
	h := &ctx.Request.Header
	forwarded := len(h.Peek("X-Forwarded-For")) > 0 || len(h.Peek("Forwarded")) > 0 || len(h.Peek("X-Real-Ip")) > 0
	return forwarded && !g.trustedProxy(ctx, peerAddr(ctx))
}

func (g *Gateway) trustedProxy(ctx *fasthttp.RequestCtx, a netip.Addr) bool {
	return trustedIn(g.live(ctx), a)
}

func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}

// parseHop reads one X-Forwarded-For entry: an address, possibly with a port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}
