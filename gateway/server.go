// Package gateway owns dockyard's HTTP face: the fasthttp server and the limits on what
// clients may hold of it, parsing of V2 routes into typed requests, dispatch to the
// virtual registry that serves the request's host, OCI error responses and CORS. It
// knows nothing of how content is stored.
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
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

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
	// HeaderTimeout bounds the wait for a request's line and headers (on a new
	// connection, from when it opens); ReadTimeout bounds a body that is not blob data
	// and any pause within blob data; UploadTimeout bounds a blob upload's body as a
	// whole; IdleTimeout closes idle keep-alive connections. WriteTimeout bounds each
	// write of a response (default ReadTimeout): a client that takes nothing of it for
	// this long is cut off; the response as a whole has no bound (large blobs, slow
	// links).
	HeaderTimeout, ReadTimeout, UploadTimeout, IdleTimeout, WriteTimeout time.Duration
	// MaxHeaderSize bounds a request's line and headers together (default 16 KiB).
	MaxHeaderSize int
	// Limits bound clients' connections, small bodies and costly requests (live).
	Limits Limits
	CORS   CORS
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
	// TrustedProxies are the load balancers and TLS terminators whose X-Forwarded-For
	// names the real client (for login rate limits and the admin endpoint's loopback
	// rule). Requests from other peers are taken at their address.
	TrustedProxies []netip.Prefix
	// Readiness is what /-/ready asks (nil: ready whenever the process answers).
	Readiness Readiness
	// AccessLog, when set, gets one line per request (see logAccess).
	AccessLog *slog.Logger
	// Classify names a tag's class (release, rc, snapshot, other) for search.
	Classify func(tag string) string
	// Metrics turns the Prometheus metrics on (Gateway.Metrics, MetricsHandler);
	// MetricsOnMain also serves them at /metrics on this listener.
	Metrics, MetricsOnMain bool
	// Events, when set, hears of manifests pushed, deleted and pulled (webhooks).
	Events Events
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
	opts    Options
	metrics *metrics // nil: off
	// The last readiness answer (see readiness).
	readyMu     sync.Mutex
	readyAt     time.Time
	readyLast   map[string]error
	readyFlight singleflight.Group
	// current is what a reload replaces (see Live).
	current atomic.Pointer[Live]
	log     *slog.Logger
	server  *fasthttp.Server
	reqID   atomic.Uint64
	// admission counts connections against the limits; rates are the clients' token
	// buckets for costly requests.
	admission *admission
	rates     rateLimiter

	// Shutdown waits for handlers; past its deadline it closes the connections still
	// open so that handlers reading a body stop, and waits for them again: the store
	// is closed after the gateway and must never be closed under a handler.
	connMu   sync.Mutex
	conns    map[net.Conn]struct{}
	handlers atomic.Int64 // running handlers
	idle     *sync.Cond   // on connMu; broadcast when handlers drops to 0

	// life is the context registries work under: not a request's *fasthttp.RequestCtx,
	// which fasthttp recycles while an HTTP client's dialer, for one, may still hold
	// it. It ends when Shutdown gives up waiting, so that work still running stops.
	life context.Context
	stop context.CancelFunc

	// storageFull logs the requests refused for want of space (see refusalLog).
	storageFull *refusalLog
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
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = opts.ReadTimeout
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = opts.ReadTimeout
	}
	if opts.MaxHeaderSize <= 0 {
		opts.MaxHeaderSize = 16 << 10 // room for long Authorization headers
	}
	g := &Gateway{opts: opts, log: opts.Logger, conns: map[net.Conn]struct{}{}, admission: newAdmission(),
		storageFull: &refusalLog{log: opts.Logger, every: storageFullLogEvery}}
	g.current.Store(&Live{Router: opts.Router, Auth: opts.Auth, TokenHosts: opts.TokenHosts, Admin: opts.Admin,
		Admins: opts.Admins, Classify: opts.Classify, CORS: opts.CORS, TrustedProxies: opts.TrustedProxies, Limits: opts.Limits})
	// From here on they are read from the live options only: a reload lets these go.
	g.opts.Router, g.opts.Auth, g.opts.Admin, g.opts.Classify = nil, nil, nil, nil
	if opts.Metrics {
		g.metrics = newMetrics(g.admission)
	}
	g.life, g.stop = context.WithCancel(context.Background())
	g.idle = sync.NewCond(&g.connMu)
	g.server = &fasthttp.Server{
		Handler:   g.handle,
		ConnState: g.track,
		Name:      "dockyard",
		// Blob bodies stream to disk; only small bodies are read ahead into memory.
		StreamRequestBody:            true,
		MaxRequestBodySize:           256 << 10,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		// The read buffer holds the request line and headers: its size is their limit.
		ReadBufferSize: opts.MaxHeaderSize,
		// fasthttp's ReadTimeout runs from a new connection's opening, or a kept-alive
		// one's first byte of a request, to the end of the headers (a slowloris
		// trickling headers is cut off there); then HeaderReceived gives the body the
		// read timeout. Every body is read under it, the first bytes included
		// (fasthttp reads up to 8 KiB of a streamed body before any handler runs);
		// only a blob upload its caller may make gets the upload timeout, from
		// dispatch, and even then each read must make progress within the read
		// timeout: a manifest or token body trickled slowly, an upload nobody
		// authorised or one that stopped coming must not hold a connection for an hour.
		ReadTimeout: opts.HeaderTimeout,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: g.opts.ReadTimeout} // not opts: it holds what a reload lets go
		},
		// No WriteTimeout: fasthttp's bounds a response as a whole; the connections
		// bound each write instead (limitedConn).
		IdleTimeout:     opts.IdleTimeout,
		ErrorHandler:    g.transportError,
		ExpectHandler:   g.expect,
		Logger:          fasthttpLogger{opts.Logger},
		CloseOnShutdown: true,
	}
	return g
}

// Live is the part of the options a configuration reload replaces: routes and
// registries, authentication and rules, token hosts, the admin endpoint and its
// admins, tag classes, CORS, trusted proxies, client limits. Each use reads the
// current one, so a request that started before a reload may finish its later steps
// under the new rules (never under a mix within one decision).
type Live struct {
	Router         *vhost.Router
	Auth           *auth.Service
	TokenHosts     []TokenHost
	Admin          Admin
	Admins         []string
	Classify       func(tag string) string
	CORS           CORS
	TrustedProxies []netip.Prefix
	Limits         Limits
}

// Reload makes l the gateway's live options.
func (g *Gateway) Reload(l Live) { g.current.Store(&l) }

// Live returns the current live options.
func (g *Gateway) Live() Live { return *g.current.Load() }

// live returns the live options of a request: those current when it began (handle
// keeps them in the request), so that one request never mixes two configurations.
func (g *Gateway) live(ctx *fasthttp.RequestCtx) *Live {
	if l, ok := ctx.UserValue(liveKey).(*Live); ok {
		return l
	}
	return g.current.Load()
}

// liveKey is the request's user value holding its live options.
const liveKey = "dockyard.live"

// Serve answers requests on l until Shutdown, admitting the connections the limits
// allow.
func (g *Gateway) Serve(l net.Listener) error {
	return g.server.Serve(&limitListener{Listener: l, g: g})
}

// Shutdown stops accepting connections and waits for open requests until ctx ends;
// then it closes the connections left and waits for their handlers to return.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := g.server.ShutdownWithContext(ctx)
	if err != nil {
		g.connMu.Lock()
		n := len(g.conns)
		for c := range g.conns {
			c.Close()
		}
		g.connMu.Unlock()
		g.stop()
		g.log.Warn("shutdown: closed connections still busy at the deadline", "connections", n)
	}
	g.connMu.Lock()
	for g.handlers.Load() > 0 {
		g.idle.Wait()
	}
	g.connMu.Unlock()
	g.stop()
	g.storageFull.flush()
	return err
}

// track keeps the set of open connections (ConnState hook).
func (g *Gateway) track(c net.Conn, state fasthttp.ConnState) {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	switch state {
	case fasthttp.StateNew:
		g.conns[c] = struct{}{}
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		delete(g.conns, c)
	}
}

func (g *Gateway) handle(ctx *fasthttp.RequestCtx) {
	g.handlers.Add(1)
	defer func() {
		if g.handlers.Add(-1) == 0 {
			g.connMu.Lock()
			g.idle.Broadcast()
			g.connMu.Unlock()
		}
	}()
	ae := &accessEntry{id: g.reqID.Add(1), start: time.Now()}
	ctx.SetUserValue(accessKey, ae)
	ctx.SetUserValue(liveKey, g.current.Load())
	if g.metrics != nil {
		g.metrics.inFlight.Inc()
		defer g.metrics.inFlight.Dec()
	}
	defer g.finish(ctx, ae)
	ctx.Response.Header.Set("Docker-Distribution-API-Version", "registry/2.0")
	if g.cors(ctx) {
		return
	}
	err := g.checkBodySize(ctx)
	switch {
	case err != nil: // a body over http.max_body_size, answered below unread
	case g.opts.MetricsOnMain && g.metrics != nil && string(ctx.Path()) == "/metrics" && ctx.IsGet():
		// As the admin endpoint: loopback clients without authentication, admins with
		// it. A scraper elsewhere uses metrics.listen, an address of its own.
		ae.route = "metrics"
		if err = g.adminAllowed(ctx); err == nil {
			g.metrics.serveHTTP(ctx)
		}
	case string(ctx.Path()) == "/-/healthy" && (ctx.IsGet() || ctx.IsHead()):
		ae.route = "healthy"
		g.healthy(ctx)
	case string(ctx.Path()) == "/-/ready" && (ctx.IsGet() || ctx.IsHead()):
		ae.route = "ready"
		g.ready(ctx)
	case bytes.HasPrefix(ctx.Path(), adminPrefix):
		ae.route = "admin"
		err = g.admin(ctx)
	case string(ctx.Path()) == "/v1/_ping":
		ae.route = "v1-ping"
		g.v1Ping(ctx)
	case string(ctx.Path()) == "/v1/search":
		ae.route = "docker-search"
		if err = g.limitRate(ctx, ae.route); err == nil {
			err = g.dockerSearch(ctx)
		}
	case string(ctx.Path()) == "/-/api/v1/search":
		ae.route = "search"
		if err = g.limitRate(ctx, ae.route); err == nil {
			err = g.apiSearch(ctx)
		}
	case g.live(ctx).Auth != nil && string(ctx.Path()) == "/token":
		ae.route = "token"
		if err = g.limitRate(ctx, ae.route); err == nil {
			err = g.token(ctx)
		}
	default:
		var route Route
		if route, err = ParseRoute(string(ctx.URI().PathOriginal())); err == nil {
			err = g.dispatch(ctx, route)
		}
	}
	if err != nil {
		g.writeError(ctx, err)
	}
}

var adminPrefix = []byte("/-/admin/")

// dispatch looks the request up in the route table, authenticates the caller,
// resolves what the endpoint addresses, authorises the action and runs the handler.
func (g *Gateway) dispatch(ctx *fasthttp.RequestCtx, route Route) error {
	ep := endpoints[route.Kind]
	o, ok := ep.op(string(ctx.Method()))
	if !ok {
		ctx.Response.Header.Set("Allow", ep.allow())
		return oci.ErrUnsupported.Withf("method %s is not allowed on the %s endpoint", ctx.Method(), ep.name)
	}
	req := &request{ctx: ctx, c: g.life, route: route, who: &principal{}}
	ae := accessOf(ctx)
	ae.route, ae.repository = ep.name, string(route.Repo)
	switch {
	case route.Kind == KindManifest:
		ae.reference = route.Reference.String()
	case route.Digest != "":
		ae.reference = string(route.Digest)
	case route.UploadID != "":
		ae.reference = route.UploadID
	}
	if ep.costly {
		if err := g.limitRate(ctx, ep.name); err != nil {
			return err
		}
	}
	upload := ep.upload && isUploadRequest(ctx.Method(), ctx.RequestURI())
	if upload && g.metrics != nil {
		g.metrics.uploads.Inc()
		defer g.metrics.uploads.Dec()
	}
	if g.live(ctx).Auth != nil {
		var err error
		if req.who, err = g.authenticate(ctx); err != nil {
			return err
		}
		if id := req.who.identity(); id != nil && !id.Anonymous() {
			ae.user = id.Name
		}
	} else if upload {
		g.allowUpload(ctx)
	}
	switch ep.scope {
	case scopeRegistry:
		reg, err := g.live(ctx).Router.ResolveHost(string(ctx.Host()))
		if err != nil {
			return err
		}
		req.reg = reg
		ae.registry = reg.Name()
	case scopeRepository:
		if err := g.resolve(req); err != nil {
			return err
		}
		ae.registry = req.reg.Name()
		if g.live(ctx).Auth != nil {
			if err := g.authorize(req, o.action); err != nil {
				return err
			}
			if upload {
				g.allowUpload(ctx)
			}
		}
		if o.write {
			w, err := req.reg.Writer()
			if err != nil {
				return err
			}
			req.w = w
		}
	}
	return o.handle(g, req)
}

// resolve routes the request's repository to its registry. The ns parameter
// (containerd's mirror hint) may choose a proxy, but never a registry other than the one
// a bearer token's access was granted for: then the request goes where the host routes
// it, as without ns.
func (g *Gateway) resolve(req *request) error {
	host := string(req.ctx.Host())
	res, err := g.live(req.ctx).Router.Resolve(host, req.route.Repo, string(req.ctx.QueryArgs().Peek("ns")))
	if err != nil {
		return err
	}
	if res.Namespace != "" && req.who.claims != nil && !tokenBound(req.who.claims, string(req.route.Repo), res.Registry.Name(), string(res.Repo)) {
		if res, err = g.live(req.ctx).Router.Resolve(host, req.route.Repo, ""); err != nil {
			return err
		}
	}
	if res.Namespace != "" {
		req.ctx.Response.Header.Set("OCI-Namespace", res.Namespace)
	}
	req.reg, req.repo = res.Registry, res.Repo
	return nil
}

// base answers /v2/: the API is here, and with authentication on, whether the
// caller's credentials are good.
func (g *Gateway) base(r *request) error {
	if g.live(r.ctx).Auth != nil && !r.who.presented() {
		return g.challenge(r.ctx, "", "", "authentication required")
	}
	r.ctx.SetContentType("application/json")
	r.ctx.SetBodyString("{}")
	return nil
}

// request is one routed request: the client's view (route) and the registry's (reg,
// repo, where namespace routing may have removed a prefix); w is set for endpoints that
// write.
type request struct {
	ctx   *fasthttp.RequestCtx
	c     context.Context // for registries (see Gateway.life)
	route Route
	reg   vhost.Registry
	w     vhost.Writer
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
		id := accessOf(ctx).id
		g.log.Error("internal error", "request_id", id, "method", string(ctx.Method()),
			"path", string(ctx.URI().PathOriginal()), "err", err)
		e = oci.ErrUnknown.Withf("internal error (request id %d)", id)
		if errors.Is(err, context.DeadlineExceeded) {
			e = oci.ErrUnknown.Withf("request timed out (request id %d)", id)
		}
	} else if e.Code == oci.ErrStorageFull {
		g.storageFull.refused(string(ctx.Method()), string(ctx.URI().PathOriginal()), e.Code.Status, err)
	} else if e.Code.Status >= 500 {
		// A failing dependency (the blob storage, an upstream): the client's message
		// names it; the log keeps the cause.
		g.log.Warn("request failed", "method", string(ctx.Method()), "path", string(ctx.URI().PathOriginal()),
			"status", e.Code.Status, "err", err)
	}
	g.drainBody(ctx)
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

// maxDrain is how much of an unread request body is read and dropped, before the error
// is sent, so that the connection can serve the client's next request.
const maxDrain = 8 << 20

// A body larger than that ends the connection after the answer. Closing a socket with
// unread data makes the kernel reset it, and a client still sending would lose the
// answer it has not read yet: the connection is half-closed instead, and what the
// client still sends is read and dropped for a while (at most lingerTime and
// lingerBytes), the way HTTP servers close lingeringly.
const (
	lingerTime  = 5 * time.Second
	lingerBytes = 512 << 20
)

// drainBody reads what is left of a refused request's body. An upload route's body
// is read under the long upload timeout; a refused one (an unauthenticated push, say)
// gets the short read timeout, so a client trickling bytes cannot hold the connection
// for an hour. A body that stalled is not waited for again, and one declared too
// large to drain is not read first.
func (g *Gateway) drainBody(ctx *fasthttp.RequestCtx) {
	if !ctx.Request.IsBodyStream() {
		return
	}
	if stalled(ctx) {
		ctx.SetConnectionClose()
		return
	}
	if ctx.Request.Header.ContentLength() > maxDrain {
		lingeringClose(ctx)
		return
	}
	ctx.Conn().SetReadDeadline(time.Now().Add(g.opts.ReadTimeout))
	n, _ := io.Copy(io.Discard, io.LimitReader(ctx.RequestBodyStream(), maxDrain+1))
	if n > maxDrain {
		lingeringClose(ctx)
	}
}

// lingeringClose ends the connection after the response: it sends the response, shuts
// its own side, then drops what the client still sends until it stops, or for at most
// lingerTime and lingerBytes.
func lingeringClose(ctx *fasthttp.RequestCtx) {
	raw := ctx.Conn()
	ctx.Hijack(func(c net.Conn) {
		if cw, ok := raw.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		raw.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, io.LimitReader(c, lingerBytes))
	})
}

func setContentLength(ctx *fasthttp.RequestCtx, n int64) {
	ctx.Response.Header.Set("Content-Length", strconv.FormatInt(n, 10))
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}
