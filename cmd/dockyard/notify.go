package main

import (
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/notify"
)

// buildNotifier makes the webhook notifier of the configuration's notifications; nil
// when there are none.
func buildNotifier(cfg *config.Config, store *cache.Store, log *slog.Logger) *notify.Notifier {
	if len(cfg.Notifications) == 0 {
		return nil
	}
	var eps []notify.Endpoint
	for _, n := range cfg.Notifications {
		ep := notify.Endpoint{Name: n.Name, URL: n.URL, Registries: n.Registries, Repositories: n.Repositories,
			SecretFile: n.SecretFile, Timeout: n.Timeout, BackoffInitial: n.BackoffInitial, BackoffMax: n.BackoffMax,
			MaxAge: n.MaxAge, MaxEvents: n.MaxEvents, Headers: map[string]notify.Header{}}
		for _, e := range n.Events {
			ep.Actions = append(ep.Actions, notify.Action(e))
		}
		for name, h := range n.Headers {
			ep.Headers[name] = notify.Header{Value: h.Value, File: h.File}
		}
		eps = append(eps, ep)
	}
	instance, _ := os.Hostname()
	return notify.New(notify.Options{Endpoints: eps, Store: store, Logger: log, Instance: instance})
}

// events adapts the notifier to what the gateway and retention tell.
type events struct{ n *notify.Notifier }

func (e events) Manifest(m gateway.ManifestEvent) error {
	return e.n.Record(notify.Event{Action: notify.Action(m.Action), Registry: m.Registry, Repository: m.Repository,
		Tag: m.Tag, Digest: string(m.Digest), MediaType: m.MediaType, Size: m.Size, Actor: m.User, RequestID: m.RequestID})
}

func (e events) TagDeleted(d lifecycle.Decision) error {
	return e.n.Record(notify.Event{Action: notify.Retention, Registry: d.Registry, Repository: d.Repository,
		Tag: d.Tag, Digest: d.Digest, Actor: "retention/" + d.Policy})
}

// gatewayEvents and retentionEvents are nil without a notifier (no typed nils).
func gatewayEvents(n *notify.Notifier) gateway.Events {
	if n == nil {
		return nil
	}
	return events{n}
}

func retentionEvents(n *notify.Notifier) lifecycle.Events {
	if n == nil {
		return nil
	}
	return events{n}
}

// registerNotifyMetrics exports each endpoint's counters.
func registerNotifyMetrics(reg *prometheus.Registry, n *notify.Notifier) {
	if n == nil {
		return
	}
	for _, c := range n.Counters() {
		labels := prometheus.Labels{"endpoint": c.Endpoint}
		for _, m := range []struct {
			name, help string
			v          interface{ Load() int64 }
		}{
			{"dockyard_notifications_sent_total", "Events delivered (answered 2xx).", c.Sent},
			{"dockyard_notifications_failed_total", "Delivery attempts that failed (each is retried).", c.Failed},
			{"dockyard_notifications_dropped_total", "Events given up: older than max_age, beyond max_events, or pulls beyond the buffer.", c.Dropped},
		} {
			v := m.v
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help, ConstLabels: labels},
				func() float64 { return float64(v.Load()) }))
		}
		q := c.Queued
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dockyard_notifications_queued",
			Help: "Events queued for the endpoint, as its deliverer last counted (on the instance delivering it).", ConstLabels: labels},
			func() float64 { return float64(q.Load()) }))
	}
}
