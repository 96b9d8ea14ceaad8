package main

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/vhost"
)

// The metrics of the jobs, the proxies and the storage, joined to the gateway's
// registry. Labels are configured names (registries, upstream hosts, job kinds) only.

// registerJobMetrics exports the scheduled and on-demand jobs' counters, read from
// the current jobs (a reload replaces them; they carry the counters on).
func registerJobMetrics(reg *prometheus.Registry, current func() *lifecycle.Jobs) {
	type counter = func(*lifecycle.Jobs) *atomic.Int64
	for _, c := range []struct {
		name, help string
		v          counter
	}{
		{"dockyard_gc_runs_total", "Garbage collections run by this instance.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().GCRuns }},
		{"dockyard_gc_blobs_collected_total", "Blobs deleted by garbage collection.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().BlobsCollected }},
		{"dockyard_gc_manifests_collected_total", "Manifests deleted by garbage collection.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().ManifestsCollected }},
		{"dockyard_uploads_purged_total", "Abandoned uploads purged.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().UploadsPurged }},
		{"dockyard_retention_runs_total", "Retention policy runs.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().RetentionRuns }},
		{"dockyard_retention_tags_deleted_total", "Tags deleted by retention.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().TagsDeleted }},
		{"dockyard_purge_runs_total", "Upload purges run by this instance.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().PurgeRuns }},
		{"dockyard_eviction_runs_total", "Proxy cache evictions run (one per limited proxy, before each collection).", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().EvictionRuns }},
		{"dockyard_eviction_manifests_total", "Manifests evicted from proxy caches.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().ManifestsEvicted }},
		{"dockyard_eviction_bytes_total", "Blob bytes proxy cache evictions made garbage.", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().BytesEvicted }},
	} {
		v := c.v
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(v(current()).Load()) }))
	}
	for _, c := range []struct {
		job string
		v   func(*lifecycle.Jobs) *atomic.Int64
	}{
		{"gc", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().GCNanos }},
		{"purge", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().PurgeNanos }},
		{"retention", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().RetentionNanos }},
		{"eviction", func(j *lifecycle.Jobs) *atomic.Int64 { return &j.Counters().EvictionNanos }},
	} {
		v := c.v
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dockyard_job_seconds_total",
			Help: "Time spent running each kind of job.", ConstLabels: prometheus.Labels{"job": c.job}},
			func() float64 { return time.Duration(v(current()).Load()).Seconds() }))
	}
}

// registerProxyMetrics exports a proxy's cache answers and its upstream traffic,
// labelled by the proxy's name and its upstream's host; it returns the collectors (a
// reload that drops the proxy unregisters them).
func registerProxyMetrics(reg *prometheus.Registry, p *vhost.Proxy) []prometheus.Collector {
	labels := prometheus.Labels{"registry": p.Name(), "upstream": p.UpstreamHost()}
	st, up := p.Stats(), p.Upstream().Stats()
	var out []prometheus.Collector
	for _, c := range []struct {
		name, help string
		extra      prometheus.Labels
		v          *atomic.Int64
	}{
		{"dockyard_proxy_cache_hits_total", "Proxy answers from the cache (a tag revalidated unchanged included).", prometheus.Labels{"kind": "blob"}, &st.BlobHits},
		{"dockyard_proxy_cache_hits_total", "Proxy answers from the cache (a tag revalidated unchanged included).", prometheus.Labels{"kind": "manifest"}, &st.ManifestHits},
		{"dockyard_proxy_cache_misses_total", "Proxy answers downloaded from the upstream.", prometheus.Labels{"kind": "blob"}, &st.BlobMisses},
		{"dockyard_proxy_cache_misses_total", "Proxy answers downloaded from the upstream.", prometheus.Labels{"kind": "manifest"}, &st.ManifestMisses},
		{"dockyard_proxy_singleflight_joins_total", "Blob requests that joined a download already running.", nil, &st.FlightJoins},
		{"dockyard_upstream_requests_total", "HTTP requests to the upstream (token requests and redirects, to a CDN say, included).", nil, &up.Requests},
		{"dockyard_upstream_errors_total", "Upstream requests that failed to connect or were answered 429 or 5xx.", nil, &up.Errors},
		{"dockyard_upstream_response_bytes_total", "Response body bytes received from the upstream.", nil, &up.Bytes},
		{"dockyard_upstream_retries_total", "Upstream requests made again after a failure in passing: kind request (429, 502-504, a cut connection, a bad manifest), kind resume (a blob body cut short, continued).", prometheus.Labels{"kind": "request"}, &up.Retries},
		{"dockyard_upstream_retries_total", "Upstream requests made again after a failure in passing: kind request (429, 502-504, a cut connection, a bad manifest), kind resume (a blob body cut short, continued).", prometheus.Labels{"kind": "resume"}, &up.Resumes},
	} {
		l := prometheus.Labels{}
		for k, v := range labels {
			l[k] = v
		}
		for k, v := range c.extra {
			l[k] = v
		}
		v := c.v
		cf := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help, ConstLabels: l},
			func() float64 { return float64(v.Load()) })
		if err := reg.Register(cf); err == nil {
			out = append(out, cf)
		}
	}
	return out
}

// storageCollector reports the blob bytes of each registry. Summing them walks the
// index's links, so a scrape reuses the last sum for a minute.
type storageCollector struct {
	store *cache.Store
	log   *slog.Logger
	mu    sync.Mutex
	at    time.Time
	last  map[string]int64
}

var storageBytesDesc = prometheus.NewDesc("dockyard_storage_bytes",
	"Blob bytes linked into each registry's repositories, each blob once per registry (refreshed at most once a minute).",
	[]string{"registry"}, nil)

// storageRefresh is how long a sum of the storage is reused (tests shorten it).
var storageRefresh = time.Minute

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- storageBytesDesc }

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || time.Since(c.at) >= storageRefresh {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		sums, err := c.store.RegistryBytes(ctx)
		cancel()
		c.at = time.Now() // a failed sum is not retried by every scrape either
		if err != nil {
			c.log.Warn("storage bytes not measured", "err", err)
		} else {
			c.last = sums
		}
	}
	for reg, n := range c.last {
		ch <- prometheus.MustNewConstMetric(storageBytesDesc, prometheus.GaugeValue, float64(n), reg)
	}
}
