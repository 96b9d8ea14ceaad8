package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
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
	serveHTTP fasthttp.RequestHandler
}

func newMetrics() *metrics {
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
	}
	reg.MustRegister(m.requests, m.duration, m.bytesIn, m.bytesOut, m.inFlight,
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
