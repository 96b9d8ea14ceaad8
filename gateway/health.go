package gateway

import (
	"context"
	"encoding/json"
	"time"

	"github.com/valyala/fasthttp"
)

// Readiness reports whether what requests need answers: the index and the blob store.
type Readiness interface {
	// Ready returns, per dependency ("index", "storage"), nil or why it does not answer.
	Ready(ctx context.Context) map[string]error
}

// readyTimeout bounds a readiness check: a probe must get an answer, not hang with the
// dependency it asks about.
const readyTimeout = 3 * time.Second

// readyFor is how long one readiness answer serves: probes from anyone, at any rate,
// ask the index and the storage at most once per readyFor between them.
const readyFor = time.Second

// readiness asks Readiness, or returns its answer of the last readyFor; concurrent
// probes share one asking.
func (g *Gateway) readiness() map[string]error {
	g.readyMu.Lock()
	if time.Since(g.readyAt) < readyFor {
		defer g.readyMu.Unlock()
		return g.readyLast
	}
	g.readyMu.Unlock()
	v, _, _ := g.readyFlight.Do("ready", func() (any, error) {
		c, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		r := g.opts.Readiness.Ready(c)
		for name, err := range r {
			if err != nil { // the cause goes to the log (once per asking): the probe answers anyone
				g.log.Warn("not ready", "check", name, "err", err)
			}
		}
		g.readyMu.Lock()
		g.readyLast, g.readyAt = r, time.Now()
		g.readyMu.Unlock()
		return r, nil
	})
	return v.(map[string]error)
}

// healthy answers /-/healthy: the process is up and serving HTTP (a liveness probe;
// it asks nothing else, so a database outage does not restart every instance).
func (g *Gateway) healthy(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ok"}`)
}

// ready answers /-/ready: 200 when the index and the blob store answer within
// readyTimeout, 503 naming what does not (a readiness probe: a balancer stops sending
// requests to the instance until it is back). No authentication: probes have none,
// and the answer says nothing of the registry's content.
func (g *Gateway) ready(ctx *fasthttp.RequestCtx) {
	status := map[string]string{}
	code := fasthttp.StatusOK
	if g.opts.Readiness != nil {
		for name, err := range g.readiness() {
			status[name] = "ok"
			if err != nil {
				status[name] = "unavailable"
				code = fasthttp.StatusServiceUnavailable
			}
		}
	}
	body, _ := json.Marshal(map[string]any{"status": map[bool]string{true: "ok", false: "unavailable"}[code == fasthttp.StatusOK], "checks": status})
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
