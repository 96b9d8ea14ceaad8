package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"
)

// accessEntry is what the access log says of one request, filled in as the request is
// routed, authenticated and resolved.
type accessEntry struct {
	id                    uint64
	start                 time.Time
	user, registry, route string
	repository, reference string
}

const accessKey = "dockyard.access"

func accessOf(ctx *fasthttp.RequestCtx) *accessEntry {
	e, _ := ctx.UserValue(accessKey).(*accessEntry)
	if e == nil {
		e = &accessEntry{} // a request handled outside handle (tests)
	}
	return e
}

// finish accounts for a handled request: its access-log line and its metrics.
func (g *Gateway) finish(ctx *fasthttp.RequestCtx, e *accessEntry) {
	if g.opts.AccessLog == nil && g.metrics == nil {
		return
	}
	size := responseBytes(ctx)
	if g.metrics != nil {
		g.metrics.observe(ctx, e, size)
	}
	if g.opts.AccessLog != nil {
		g.logAccess(ctx, e, size)
	}
}

// responseBytes is the length of the response body: for a streamed blob, what it
// declares.
func responseBytes(ctx *fasthttp.RequestCtx) int {
	size := 0
	switch {
	case ctx.IsHead():
	case ctx.Response.IsBodyStream(): // never Body(): it would read the stream
		size = max(ctx.Response.Header.ContentLength(), 0)
	default:
		size = len(ctx.Response.Body())
	}
	return size
}

// logAccess writes the request's line: never its query string (it may carry tokens)
// nor any header but the user agent. duration is the time until the response was
// ready to send.
func (g *Gateway) logAccess(ctx *fasthttp.RequestCtx, e *accessEntry, size int) {
	user := e.user
	if user == "" {
		user = "-"
	}
	remote := g.clientIP(ctx)
	if !remote.IsValid() { // a trusted proxy that named no client, or named it badly
		remote, _ = netip.AddrFromSlice(ctx.RemoteIP())
		remote = remote.Unmap()
	}
	g.opts.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, "access",
		slog.Uint64("request_id", e.id),
		slog.String("remote", remote.String()),
		slog.String("user", user),
		slog.String("host", string(ctx.Host())),
		slog.String("registry", e.registry),
		slog.String("method", string(ctx.Method())),
		slog.String("route", e.route),
		slog.String("repository", e.repository),
		slog.String("reference", e.reference),
		slog.Int("status", ctx.Response.StatusCode()),
		slog.Int("bytes", size),
		slog.Float64("duration_ms", float64(time.Since(e.start).Microseconds())/1000),
		slog.String("user_agent", string(ctx.UserAgent())),
	)
}
