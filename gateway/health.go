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
		c, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		for name, err := range g.opts.Readiness.Ready(c) {
			status[name] = "ok"
			if err != nil {
				// The cause goes to the log: the probe answers anyone.
				status[name] = "unavailable"
				code = fasthttp.StatusServiceUnavailable
				g.log.Warn("not ready", "check", name, "err", err)
			}
		}
	}
	body, _ := json.Marshal(map[string]any{"status": map[bool]string{true: "ok", false: "unavailable"}[code == fasthttp.StatusOK], "checks": status})
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
