package gateway

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/dockyard/dockyard/auth"
)

// metrics are the gateway's Prometheus metrics. Every label has a bounded set of
// values: registry names (from the configuration), route names (the endpoint table),
// methods and status codes; never repository names or digests.
type metrics struct {
	registry  *prometheus.Registry
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	bytesIn   *prometheus.CounterVec
	bytesOut  *prometheus.CounterVec
	inFlight  prometheus.Gauge
	uploads   prometheus.Gauge
	authFails *prometheus.CounterVec
	limited   prometheus.Counter
	// refused counts connections over a limit (by limit), rateLimited requests over
	// their client's rate (by route).
	refused     *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	serveHTTP   fasthttp.RequestHandler
}

func newMetrics(conns *admission) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dockyard_http_requests_total",
			Help: "Requests answered, by registry, route (endpoint), method and status."}, []string{"registry", "route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dockyard_http_request_duration_seconds",
			Help:    "Time until the response was ready to send, by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"route", "method"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dockyard_http_request_bytes_total",
			Help: "Request body bytes (as declared), by registry and route."}, []string{"registry", "route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dockyard_http_response_bytes_total",
			Help: "Response body bytes, by registry and route."}, []string{"registry", "route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dockyard_http_requests_in_flight",
			Help: "Requests being handled now."}),
		uploads: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dockyard_uploads_in_flight",
			Help: "Blob upload bodies (POST, PATCH, PUT) being received now."}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dockyard_auth_failures_total",
			Help: "Failed authentications: bad credentials, directory unavailable, invalid bearer token, rate limited."}, []string{"reason"}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{Name: "dockyard_auth_rate_limited_total",
			Help: "Logins refused by the failed-login rate limit."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dockyard_http_connections_refused_total",
			Help: "Connections refused on arrival, by the limit they were over (max_conns, max_conns_per_ip)."}, []string{"limit"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dockyard_http_rate_limited_total",
			Help: "Requests refused (429) by their client's rate limit, by route (catalog, search, docker-search, token, login)."}, []string{"route"}),
	}
	// Every limit and route is exported from the start, at zero: a dashboard's rate()
	// then has a series before the first refusal.
	for _, l := range []string{"max_conns", "max_conns_per_ip"} {
		m.refused.WithLabelValues(l)
	}
	for _, r := range []string{"catalog", "search", "docker-search", "token", "login"} {
		m.rateLimited.WithLabelValues(r)
	}
	connections := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dockyard_http_connections",
		Help: "Client connections open now."}, func() float64 { return float64(conns.open()) })
	reg.MustRegister(m.requests, m.duration, m.bytesIn, m.bytesOut, m.inFlight, m.uploads, m.authFails, m.limited,
		m.refused, m.rateLimited, connections,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.serveHTTP = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return m
}

// knownMethods bounds the method label.
var knownMethods = map[string]bool{"GET": true, "HEAD": true, "PUT": true, "POST": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

// observe counts a finished request.
func (m *metrics) observe(ctx *fasthttp.RequestCtx, e *accessEntry, responseBytes int) {
	method := string(ctx.Method())
	if !knownMethods[method] {
		method = "OTHER"
	}
	route := e.route
	if route == "" {
		route = "unknown"
	}
	m.requests.WithLabelValues(e.registry, route, method, strconv.Itoa(ctx.Response.StatusCode())).Inc()
	m.duration.WithLabelValues(route, method).Observe(time.Since(e.start).Seconds())
	if n := ctx.Request.Header.ContentLength(); n > 0 {
		m.bytesIn.WithLabelValues(e.registry, route).Add(float64(n))
	}
	m.bytesOut.WithLabelValues(e.registry, route).Add(float64(responseBytes))
}

// authFailed counts a failed authentication (nil m: metrics off).
func (m *metrics) authFailed(reason string) {
	if m != nil {
		m.authFails.WithLabelValues(reason).Inc()
	}
}

// loginFailed counts a failed login by its cause.
func (m *metrics) loginFailed(err error) {
	if m == nil {
		return
	}
	var rl *auth.ErrRateLimited
	switch {
	case errors.As(err, &rl):
		m.limited.Inc()
		m.authFailed("rate_limited")
	case errors.Is(err, auth.ErrDirectoryUnavailable):
		m.authFailed("directory_unavailable")
	default:
		m.authFailed("credentials")
	}
}

// Metrics is the gateway's metrics registry: other packages' collectors (jobs, the
// store) join it. Nil when metrics are off.
func (g *Gateway) Metrics() *prometheus.Registry {
	if g.metrics == nil {
		return nil
	}
	return g.metrics.registry
}

// MetricsHandler serves the metrics in Prometheus' text format (at /metrics on the
// main listener, or on metrics.listen).
func (g *Gateway) MetricsHandler() fasthttp.RequestHandler {
	if g.metrics == nil {
		return func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNotFound) }
	}
	return g.metrics.serveHTTP
}
