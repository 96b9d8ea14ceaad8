package main

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

// A running server re-reads its configuration on SIGHUP or POST /-/admin/reload:
// registries and routes, authentication (users file, LDAP, rules, token hosts),
// lifecycle policies and schedules, admins, CORS, trusted proxies and the client
// limits (http.max_conns, max_conns_per_ip, max_body_size, rate_limit) change in
// place. An invalid file changes nothing: the errors are logged (with their key
// paths) and the running configuration stays. Requests in flight finish with what
// they started with; uploads continue across a reload (their state is in the store,
// and a registry keeps its name). Settings that shape the process itself (listen
// address, data directory, storage, index, the limits: section, TLS, timeouts,
// header size, metrics, logging) change only at restart: a reload says which of
// those differ.

// reload re-reads the configuration file and applies it; the returned warnings name
// the changed settings that need a restart.
func (a *app) reload() ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg, err := config.Load(a.path)
	if err != nil {
		a.log.Error("configuration reload failed: the running configuration stays", "file", a.path, "err", err)
		return nil, oci.ErrConfigInvalid.Withf("%v", err)
	}
	// What the command line overrode stays overridden.
	cfg.Listen, cfg.Data = a.cfg.Listen, a.cfg.Data
	p, err := a.assemble(cfg)
	if err != nil {
		a.log.Error("configuration reload failed: the running configuration stays", "file", a.path, "err", err)
		return nil, oci.ErrConfigInvalid.Withf("%v", err)
	}
	warnings := restartOnly(a.cfg, cfg)
	for _, w := range warnings {
		a.log.Warn("configuration reload: this setting changes only at restart", "key", w)
	}
	oldAuth := a.gw.Live().Auth
	p.live.Auth.KeepLimits(oldAuth)
	a.installLocked(p)
	if oldAuth != nil && oldAuth != p.live.Auth {
		oldAuth.Close()
	}
	a.log.Info("configuration reloaded", "file", a.path, "registries", len(cfg.Registries), "routes", len(cfg.Routes))
	return warnings, nil
}

// install makes p the running configuration (build, before serving).
func (a *app) install(p *parts) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.installLocked(p)
}

func (a *app) installLocked(p *parts) {
	if old := a.jobs; old != nil {
		// The old schedules stop (a job running finishes or stops at its next check)
		// before the new ones start; their counters carry on.
		if a.stopJobs != nil {
			a.stopJobs()
		}
		old.Wait()
		p.jobs.Inherit(old)
	}
	a.jobs, a.admin, a.cfg = p.jobs, p.admin, p.cfg
	a.store.SetAccessories(p.jobs.Engine.Accessories, p.cfg.Lifecycle.Accessories.DeleteWithSubject)
	a.current.Store(p.jobs)
	reg := a.gw.Metrics()
	for _, old := range a.proxies {
		if !slices.Contains(p.proxies, old) {
			for _, c := range a.proxyGauges[old] {
				reg.Unregister(c)
			}
			delete(a.proxyGauges, old)
			a.retire(old)
		}
	}
	for _, px := range p.proxies {
		if reg != nil && !slices.Contains(a.proxies, px) {
			a.proxyGauges[px] = registerProxyMetrics(reg, px)
		}
	}
	a.proxies, a.proxyCfg = p.proxies, p.proxyCfg
	a.gw.Reload(p.live)
	if a.jobsStarted {
		a.startJobsLocked()
	}
}

// retire lets a proxy a reload dropped finish its downloads in flight, then closes it
// (its idle upstream connections with it); close cuts short those still running.
func (a *app) retire(p *vhost.Proxy) {
	a.retired[p] = true
	a.retiring.Add(1)
	go func() {
		defer a.retiring.Done()
		p.Retire()
		a.mu.Lock()
		delete(a.retired, p)
		a.mu.Unlock()
	}()
}

// restartOnly lists the settings that differ between old and new and that a reload
// does not apply.
func restartOnly(old, new *config.Config) []string {
	var out []string
	for _, f := range []struct {
		key      string
		old, new any
	}{
		{"listen", old.Listen, new.Listen}, {"data", old.Data, new.Data}, {"log", old.Log, new.Log},
		{"metrics", old.Metrics, new.Metrics}, {"storage", old.Storage, new.Storage}, {"index", old.Index, new.Index},
		{"limits", old.Limits, new.Limits}, {"tls", old.TLS, new.TLS}, {"notifications", old.Notifications, new.Notifications},
		{"http (timeouts, max_manifest_size, max_header_size)", timeouts(old.HTTP), timeouts(new.HTTP)},
	} {
		if !reflect.DeepEqual(f.old, f.new) {
			out = append(out, f.key)
		}
	}
	return out
}

// timeouts is the part of the http settings a reload does not apply (CORS, trusted
// proxies and client limits it does).
func timeouts(h config.HTTP) string {
	return fmt.Sprint(h.HeaderTimeout, h.ReadTimeout, h.UploadTimeout, h.IdleTimeout, h.WriteTimeout, h.ShutdownTimeout,
		h.MaxManifestSize, h.MaxHeaderSize)
}
