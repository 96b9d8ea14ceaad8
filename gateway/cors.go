package gateway

import (
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// cors adds CORS headers for allowed origins and answers preflight requests. It
// returns true when the request has been answered.
func (g *Gateway) cors(ctx *fasthttp.RequestCtx) bool {
	c := &g.live(ctx).CORS
	origin := string(ctx.Request.Header.Peek("Origin"))
	if origin == "" || len(c.AllowedOrigins) == 0 {
		return false
	}
	if !slices.Contains(c.AllowedOrigins, "*") && !slices.Contains(c.AllowedOrigins, origin) {
		return false
	}
	h := &ctx.Response.Header
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if c.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if len(c.ExposedHeaders) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(c.ExposedHeaders, ", "))
	}
	if !ctx.IsOptions() || len(ctx.Request.Header.Peek("Access-Control-Request-Method")) == 0 {
		return false
	}
	h.Set("Access-Control-Allow-Methods", strings.Join(c.AllowedMethods, ", "))
	h.Set("Access-Control-Allow-Headers", strings.Join(c.AllowedHeaders, ", "))
	if c.MaxAge > 0 {
		h.Set("Access-Control-Max-Age", strconv.Itoa(int(c.MaxAge.Seconds())))
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return true
}
