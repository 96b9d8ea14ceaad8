// Package gateway owns dockyard's HTTP face: the fasthttp server, parsing of V2 routes
// into typed requests, dispatch to the virtual registry that serves the request's host,
// OCI error responses and CORS. It knows nothing of how content is stored.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

// Options configure a Gateway.
type Options struct {
	Router *vhost.Router
	Logger *slog.Logger
	// MaxManifestSize is the largest manifest accepted, in bytes.
	MaxManifestSize int64
	// ReadTimeout bounds reading a request's headers and small bodies; UploadTimeout
	// bounds reading a blob upload body; IdleTimeout closes idle keep-alive connections.
	ReadTimeout, UploadTimeout, IdleTimeout, WriteTimeout time.Duration
	CORS                                                  CORS
	// Auth, when set, authenticates and authorises every request (nil: open registry).
	Auth *auth.Service
	// TokenHosts override the token realm and service per Host.
	TokenHosts []TokenHost
	// TLS tells the gateway it is served over TLS (for the token realm's scheme).
	TLS bool
	// Admin runs lifecycle jobs on demand at /-/admin/; Admins ("user:NAME",
	// "group:NAME") may call it when authentication is on.
	Admin  Admin
	Admins []string
}

// CORS lists what browsers on other origins may do. No origins means no CORS headers.
type CORS struct {
	AllowedOrigins   []string
	AllowedMethods   []string
	AllowedHeaders   []string
	ExposedHeaders   []string
	MaxAge           time.Duration
	AllowCredentials bool
}

// Gateway serves the distribution API.
type Gateway struct {
	opts   Options
	auth   *auth.Service
	log    *slog.Logger
	server *fasthttp.Server
	reqID  atomic.Uint64
}

// New builds a gateway.
func New(opts Options) *Gateway {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxManifestSize <= 0 {
		opts.MaxManifestSize = 4 << 20
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = time.Minute
	}
	if opts.UploadTimeout <= 0 {
		opts.UploadTimeout = time.Hour
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	g := &Gateway{opts: opts, auth: opts.Auth, log: opts.Logger}
	g.server = &fasthttp.Server{
		Handler: g.handle,
		Name:    "dockyard",
		// Blob bodies stream to disk; only small bodies are read ahead into memory.
		StreamRequestBody:            true,
		MaxRequestBodySize:           256 << 10,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		ReadBufferSize:               16 << 10, // room for long Authorization headers
		ReadTimeout:                  opts.ReadTimeout,
		WriteTimeout:                 opts.WriteTimeout,
		IdleTimeout:                  opts.IdleTimeout,
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			if m := string(h.Method()); m == "PATCH" || m == "PUT" || m == "POST" {
				return fasthttp.RequestConfig{ReadTimeout: opts.UploadTimeout}
			}
			return fasthttp.RequestConfig{}
		},
		Logger:          fasthttpLogger{opts.Logger},
		CloseOnShutdown: true,
	}
	return g
}

// Serve answers requests on l until Shutdown.
func (g *Gateway) Serve(l net.Listener) error { return g.server.Serve(l) }

// Shutdown stops accepting connections and waits for open requests.
func (g *Gateway) Shutdown(ctx context.Context) error { return g.server.ShutdownWithContext(ctx) }

func (g *Gateway) handle(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Docker-Distribution-API-Version", "registry/2.0")
	if g.cors(ctx) {
		return
	}
	if bytes.HasPrefix(ctx.Path(), adminPrefix) {
		if err := g.admin(ctx); err != nil {
			g.writeError(ctx, err)
		}
		return
	}
	if g.auth != nil && string(ctx.Path()) == "/token" {
		if err := g.token(ctx); err != nil {
			g.writeError(ctx, err)
		}
		return
	}
	route, err := ParseRoute(string(ctx.URI().PathOriginal()))
	if err == nil {
		err = g.checkMethod(ctx, route)
	}
	if err == nil {
		err = g.dispatch(ctx, route)
	}
	if err != nil {
		g.writeError(ctx, err)
	}
}

var adminPrefix = []byte("/-/admin/")

func (g *Gateway) checkMethod(ctx *fasthttp.RequestCtx, r Route) error {
	ep := endpoints[r.Kind]
	method := string(ctx.Method())
	for _, m := range ep.methods {
		if m == method {
			return nil
		}
	}
	ctx.Response.Header.Set("Allow", strings.Join(ep.methods, ", "))
	return oci.ErrUnsupported.Withf("method %s is not allowed on the %s endpoint", method, ep.name)
}

func (g *Gateway) dispatch(ctx *fasthttp.RequestCtx, r Route) error {
	who := &principal{}
	if g.auth != nil {
		var err error
		if who, err = g.authenticate(ctx); err != nil {
			return err
		}
	}
	if r.Kind == KindBase {
		if g.auth != nil && !who.presented() {
			return g.challenge(ctx, "", "", "authentication required")
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString("{}")
		return nil
	}
	if r.Kind == KindCatalog {
		reg, err := g.opts.Router.ResolveHost(string(ctx.Host()))
		if err != nil {
			return err
		}
		visible := func(string) bool { return true }
		if g.auth != nil {
			if who.claims != nil && !tokenAllows(who.claims, "registry", "catalog", "*") {
				return g.challenge(ctx, "registry:catalog:*", "insufficient_scope", "the catalog needs a registry:catalog:* token")
			}
			id := who.identity()
			visible = func(repo string) bool { return g.auth.Decide(id, reg.Name(), repo, auth.Pull) }
		}
		return g.catalog(ctx, reg, visible)
	}
	res, err := g.opts.Router.Resolve(string(ctx.Host()), r.Repo, string(ctx.QueryArgs().Peek("ns")))
	if err != nil {
		return err
	}
	if res.Namespace != "" {
		ctx.Response.Header.Set("OCI-Namespace", res.Namespace)
	}
	req := &request{ctx: ctx, route: r, reg: res.Registry, repo: res.Repo, who: who}
	if g.auth != nil {
		if err := g.authorize(req, actionFor(r.Kind, string(ctx.Method()))); err != nil {
			return err
		}
	}
	method := string(ctx.Method())
	switch r.Kind {
	case KindTags:
		return g.tags(req)
	case KindManifest:
		switch method {
		case "GET", "HEAD":
			return g.getManifest(req)
		case "PUT":
			return g.putManifest(req)
		default:
			return g.deleteManifest(req)
		}
	case KindBlob:
		switch method {
		case "GET", "HEAD":
			return g.getBlob(req)
		default:
			return g.deleteBlob(req)
		}
	case KindUploads:
		return g.startUpload(req)
	case KindUpload:
		switch method {
		case "GET":
			return g.uploadStatus(req)
		case "PATCH":
			return g.patchUpload(req)
		case "PUT":
			return g.finishUpload(req)
		default:
			return g.cancelUpload(req)
		}
	case KindReferrers:
		return g.referrers(req)
	}
	return oci.ErrNotFound
}

// request is one routed request: the client's view (route) and the registry's (reg,
// repo, where namespace routing may have removed a prefix).
type request struct {
	ctx   *fasthttp.RequestCtx
	route Route
	reg   vhost.Registry
	repo  oci.Repository
	who   *principal
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError answers with the registry error in err, or logs an internal error under a
// request id and answers UNKNOWN without details.
func (g *Gateway) writeError(ctx *fasthttp.RequestCtx, err error) {
	e, ok := oci.AsError(err)
	if !ok {
		id := g.reqID.Add(1)
		g.log.Error("internal error", "request_id", id, "method", string(ctx.Method()),
			"path", string(ctx.URI().PathOriginal()), "err", err)
		e = oci.ErrUnknown.Withf("internal error (request id %d)", id)
		if errors.Is(err, context.DeadlineExceeded) {
			e = oci.ErrUnknown.Withf("request timed out (request id %d)", id)
		}
	}
	drainBody(ctx)
	ctx.Response.ResetBody()
	ctx.Response.Header.Del("Docker-Content-Digest")
	ctx.Response.Header.Del("Location")
	ctx.SetStatusCode(e.Code.Status)
	if e.RetryAfter != "" {
		ctx.Response.Header.Set("Retry-After", e.RetryAfter)
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code.Name, Message: e.Message, Detail: e.Detail}}})
	ctx.SetContentType("application/json")
	if ctx.IsHead() {
		ctx.Response.Header.SetContentLength(len(body))
		ctx.Response.SkipBody = true
		return
	}
	ctx.SetBody(body)
}

// maxDrain is how much of an unread request body is read and dropped so that the
// client, still sending, gets to read the error; past it the connection is closed.
const maxDrain = 8 << 20

func drainBody(ctx *fasthttp.RequestCtx) {
	if !ctx.Request.IsBodyStream() {
		return
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(ctx.RequestBodyStream(), maxDrain+1))
	if n > maxDrain {
		ctx.SetConnectionClose()
	}
}

func setContentLength(ctx *fasthttp.RequestCtx, n int64) {
	ctx.Response.Header.Set("Content-Length", strconv.FormatInt(n, 10))
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}
