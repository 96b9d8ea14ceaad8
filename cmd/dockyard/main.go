// Command dockyard runs the registry (serve) and its administrative commands.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/notify"
	"github.com/dockyard/dockyard/upstream"
	"github.com/dockyard/dockyard/vhost"
)

const usage = `dockyard: a private container registry and registry federation gateway.

Usage:
  dockyard serve [--config FILE] [--listen ADDR] [--data DIR]
  dockyard check-config --config FILE
  dockyard healthcheck [--url http://127.0.0.1:5000/-/ready] [--timeout 3s] [--insecure]
      (exit 0 when the registry answers 200 or 401; the container image's HEALTHCHECK)
  dockyard token create|list|revoke …   (CI tokens; see dockyard token)
  dockyard lifecycle plan|apply [--registry R] [--repo GLOB] [--json]
  dockyard gc [--dry-run] [--grace D]
  dockyard fsck [--repair] [--verify-digests]
  dockyard storage migrate --config OLD.yaml --to-config NEW.yaml   (copy blobs between stores)
  dockyard index migrate [--config FILE]     (bring the index's schema and format up to date)
  dockyard index copy --from badger:DIR --config NEW.yaml   (a single node's index into PostgreSQL)
  dockyard import --from URL [--username U --password-file F] [--repositories GLOB]… [--tags REGEXP]…
         [--to http://127.0.0.1:5000] [--into [HOST][/NAMESPACE]] [--to-username U --to-password-file F]
         [--concurrency N] [--insecure] [--ca-file F]
      (copy another registry — Nexus, Harbor, a CNCF registry — into a running dockyard, through
      its API; run it again to resume)
(the administrative commands open the index: on Badger, run them while the server is
stopped; on a shared PostgreSQL index they run beside the instances, but fsck --repair
refuses to while any serves. The server itself runs retention, GC and upload purging on
the configured schedules, one instance at a time.)

With no configuration file, dockyard serves one hosted registry for every host on
:5000 with its data under ./data.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dockyard:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "check-config":
		fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
		path := fs.String("config", "", "configuration file")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if _, err := config.Load(*path); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "configuration is valid")
		return nil
	case "token":
		return tokenCommand(args[1:], stdout)
	case "gc":
		return gcCommand(args[1:], stdout)
	case "lifecycle":
		return lifecycleCommand(args[1:], stdout)
	case "fsck":
		return fsckCommand(args[1:], stdout)
	case "storage":
		return storageCommand(args[1:], stdout)
	case "index":
		return indexCommand(args[1:], stdout)
	case "healthcheck":
		return healthCommand(args[1:], stdout)
	case "import":
		return importCommand(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file (YAML); without it the embedded default is used")
	listen := fs.String("listen", "", "listen address, overrides the configuration (e.g. :5000)")
	data := fs.String("data", "", "data directory, overrides the configuration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *data != "" {
		cfg.Data = *data
	}
	log := newLogger(cfg.Log, stderr)
	warnOpenSecrets(cfg, log)
	warnFileLimit(cfg, log)

	store, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer store.Close() // last: after everything that uses it has stopped
	if err := store.Serve(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := build(ctx, cfg, store, log)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		a.close()
		return err
	}
	if cfg.TLS.CertFile != "" {
		cert, err := newReloadingCert(cfg.TLS.CertFile, cfg.TLS.KeyFile, log)
		if err != nil {
			a.close()
			return err
		}
		l = tls.NewListener(l, serverTLS(cert.GetCertificate))
	}
	log.Info("dockyard listening", "addr", l.Addr().String(), "data", cfg.Data, "registries", len(cfg.Registries))

	if cfg.Metrics.Enabled && cfg.Metrics.Listen != "" {
		ml, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			a.close()
			return fmt.Errorf("metrics.listen: %w", err)
		}
		ms := &fasthttp.Server{Handler: a.gw.MetricsHandler(), Name: "dockyard-metrics", ReadTimeout: 10 * time.Second}
		go ms.Serve(ml)
		defer ms.Shutdown()
		log.Info("metrics listening", "addr", ml.Addr().String())
	}
	a.path = *path
	a.start()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				a.reload() // logs what it did, or why it did nothing
			case <-ctx.Done():
				return
			}
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- a.gw.Serve(l) }()
	select {
	case err = <-errc:
		stop()
	case <-ctx.Done():
		log.Info("shutting down: finishing the requests in flight", "timeout", cfg.HTTP.ShutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout) // as started: a reload does not change it
		defer cancel()
		err = a.gw.Shutdown(sctx)
	}
	a.close()
	return err
}

// openStore opens the store the configuration describes: the index under the data
// directory, the blobs there or in S3.
func openStore(cfg *config.Config, log *slog.Logger) (*cache.Store, error) {
	blobs, err := blobStore(cfg)
	if err != nil {
		return nil, err
	}
	idx, err := indexDB(cfg, log)
	if err != nil {
		return nil, err
	}
	return cache.Open(cache.Options{Dir: cfg.Data, Logger: log, Blobs: blobs, Index: idx,
		UploadBuffers: int64(cfg.Limits.UploadBuffers), ManifestCache: int64(cfg.Limits.ManifestCache),
		MaxSessionsPerClient: cfg.Limits.UploadSessionsPerClient, MinFreeSpace: int64(cfg.Storage.MinFreeSpace)})
}

// indexDB opens the configured index (nil: Badger under the data directory, which
// the store opens itself).
func indexDB(cfg *config.Config, log *slog.Logger) (index.DB, error) {
	if cfg.Index.Driver != "postgres" {
		return nil, nil
	}
	p := cfg.Index.Postgres
	dsn, err := secret("", p.DSNEnv)
	if err != nil {
		return nil, fmt.Errorf("index.postgres.dsn_env: %w", err)
	}
	if p.DSN != "" {
		dsn = p.DSN
	}
	password, err := secret(p.PasswordFile, "")
	if err != nil {
		return nil, fmt.Errorf("index.postgres.password_file: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := index.OpenPostgres(ctx, index.PostgresOptions{DSN: dsn, Password: password,
		MaxConns: int32(p.MaxConns), Timeout: p.Timeout})
	if err != nil {
		return nil, err
	}
	log.Info("index on PostgreSQL", "max_conns", p.MaxConns)
	return db, nil
}

// blobStore builds the configured blob store (nil: the filesystem under the data
// directory, which the index opens itself).
func blobStore(cfg *config.Config) (blobstore.Store, error) {
	if cfg.Storage.Driver != "s3" {
		return nil, nil
	}
	c := cfg.Storage.S3
	key, err := secret(c.SecretAccessKeyFile, c.SecretAccessKeyEnv)
	if err != nil {
		return nil, fmt.Errorf("storage.s3 secret access key: %w", err)
	}
	o := blobstore.S3Options{Endpoint: c.Endpoint, Region: c.Region, Bucket: c.Bucket, Prefix: c.Prefix,
		PathStyle: c.PathStyle, PartSize: int64(c.PartSize), CAFile: c.CAFile,
		AccessKeyID: c.AccessKeyID, SecretAccessKey: key}
	if c.Redirect {
		o.RedirectExpiry = c.RedirectExpiry
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s3, err := blobstore.NewS3(ctx, o)
	if err != nil {
		return nil, err
	}
	return s3, nil
}

// app is a built server. It stops in order: the gateway first (serve shuts it down:
// no new requests, running ones finished or cut off), then the jobs, scheduled and
// on demand (their context, the server's, has ended), then the proxies' background
// downloads; the store is closed after all of them. A reload (reload.go) replaces
// jobs, admin, proxies and the gateway's live options; what it replaced is kept in
// retiring until it has finished.
type app struct {
	gw      *gateway.Gateway
	jobs    *lifecycle.Jobs
	admin   *adminJobs
	proxies []*vhost.Proxy

	path  string // the configuration file ("" for the embedded default)
	cfg   *config.Config
	store *cache.Store
	log   *slog.Logger
	life  context.Context // the server's lifetime

	mu          sync.Mutex // reloads, one at a time
	current     atomic.Pointer[lifecycle.Jobs]
	jobsStarted bool
	stopJobs    context.CancelFunc
	proxyCfg    map[string]config.Registry // each proxy's configuration, to keep unchanged ones
	proxyGauges map[*vhost.Proxy][]prometheus.Collector
	adminRuns   sync.WaitGroup // on-demand jobs, whichever admin started them
	retiring    sync.WaitGroup // proxies a reload dropped, finishing their downloads
	retired     map[*vhost.Proxy]bool
	// notifier delivers webhooks (nil: none configured). Built once: notifications
	// change only at restart. It stops after the jobs, which may still record
	// retention events, and leaves what it has not delivered queued in the index.
	notifier *notify.Notifier
}

// start runs the scheduled jobs and the webhook deliveries, for the server's lifetime.
func (a *app) start() {
	a.startJobs()
	if a.notifier != nil {
		a.notifier.Start(a.life)
	}
}

func (a *app) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.jobs.Wait()
	a.admin.Wait()
	for _, p := range a.proxies {
		p.Close()
	}
	for p := range a.retired {
		p.Close() // downloads still running are cut short: the store closes next
	}
	a.mu.Unlock()
	a.retiring.Wait()
	a.mu.Lock()
	if a.notifier != nil {
		a.notifier.Close()
	}
}

// startJobs starts the scheduled jobs of the current configuration.
func (a *app) startJobs() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.startJobsLocked()
}

func (a *app) startJobsLocked() {
	a.jobsStarted = true
	var ctx context.Context
	ctx, a.stopJobs = context.WithCancel(a.life)
	a.jobs.Start(ctx)
}

// build wires the configured registries and routes into a gateway. Jobs run on
// demand under ctx, the server's lifetime.
func build(ctx context.Context, cfg *config.Config, store *cache.Store, log *slog.Logger) (*app, error) {
	a := &app{cfg: cfg, store: store, log: log, life: ctx, proxyCfg: map[string]config.Registry{}, retired: map[*vhost.Proxy]bool{},
		proxyGauges: map[*vhost.Proxy][]prometheus.Collector{}, notifier: buildNotifier(cfg, store, log)}
	p, err := a.assemble(cfg)
	if err != nil {
		return nil, err
	}
	a.gw = gateway.New(gateway.Options{
		Router: p.live.Router, Auth: p.live.Auth, TokenHosts: p.live.TokenHosts, Admin: p.live.Admin, Admins: p.live.Admins,
		Classify: p.live.Classify, CORS: p.live.CORS, TrustedProxies: p.live.TrustedProxies,
		Readiness: store, AccessLog: accessLogger(cfg.Log, os.Stderr), Events: gatewayEvents(a.notifier),
		Metrics: cfg.Metrics.Enabled, MetricsOnMain: cfg.Metrics.Listen == "",
		TLS: cfg.TLS.CertFile != "", Logger: log, MaxManifestSize: int64(cfg.HTTP.MaxManifestSize),
		HeaderTimeout: cfg.HTTP.HeaderTimeout, ReadTimeout: cfg.HTTP.ReadTimeout, UploadTimeout: cfg.HTTP.UploadTimeout,
		IdleTimeout: cfg.HTTP.IdleTimeout, WriteTimeout: cfg.HTTP.WriteTimeout,
		MaxHeaderSize: int(cfg.HTTP.MaxHeaderSize), Limits: p.live.Limits,
	})
	if reg := a.gw.Metrics(); reg != nil {
		registerJobMetrics(reg, a.current.Load)
		registerNotifyMetrics(reg, a.notifier)
		reg.MustRegister(&storageCollector{store: store, log: log})
	}
	a.install(p)
	return a, nil
}

// parts are what a configuration builds and a reload replaces.
type parts struct {
	cfg      *config.Config
	jobs     *lifecycle.Jobs
	admin    *adminJobs
	proxies  []*vhost.Proxy
	proxyCfg map[string]config.Registry
	live     gateway.Live
}

// assemble builds the parts of cfg, keeping the proxies of the running configuration
// whose settings did not change (their caches' state, their downloads in flight).
func (a *app) assemble(cfg *config.Config) (*parts, error) {
	jobs, im, err := buildLifecycle(cfg, a.store, retentionEvents(a.notifier), a.log)
	if err != nil {
		return nil, err
	}
	p := &parts{cfg: cfg, jobs: jobs, proxyCfg: map[string]config.Registry{}}
	kept := map[string]*vhost.Proxy{}
	for _, old := range a.proxies {
		if c, ok := a.proxyCfg[old.Name()]; ok {
			for _, r := range cfg.Registries {
				if r.Name == c.Name && reflect.DeepEqual(r, c) {
					kept[r.Name] = old
				}
			}
		}
	}
	regs, err := buildRegistries(cfg, a.store, im, a.log, kept)
	fail := func(err error) (*parts, error) {
		for _, r := range regs {
			if px, ok := r.(*vhost.Proxy); ok && kept[px.Name()] != px {
				px.Close()
			}
		}
		return nil, err
	}
	if err != nil {
		return fail(err)
	}
	for _, r := range regs {
		if px, ok := r.(*vhost.Proxy); ok {
			p.proxies = append(p.proxies, px)
		}
	}
	for _, r := range cfg.Registries {
		if r.Type == "proxy" {
			p.proxyCfg[r.Name] = r
		}
	}
	var routes []vhost.Route
	for _, r := range cfg.Routes {
		routes = append(routes, vhost.Route{Host: r.Host, Registry: r.Registry, Namespaces: r.Namespaces})
	}
	router, err := vhost.NewRouter(regs, routes)
	if err != nil {
		return fail(err)
	}
	authService, err := buildAuth(cfg, a.store, a.log)
	if err != nil {
		return fail(err)
	}
	p.admin = &adminJobs{jobs: jobs, auth: authService, life: a.life, reload: a.reload, running: &a.adminRuns}
	var tokenHosts []gateway.TokenHost
	for _, h := range cfg.Auth.Token.Hosts {
		tokenHosts = append(tokenHosts, gateway.TokenHost{Host: h.Host, Realm: h.Realm, Service: h.Service})
	}
	var trusted []netip.Prefix
	for _, tp := range cfg.HTTP.TrustedProxies {
		prefix, err := config.ParsePrefix(tp)
		if err != nil {
			return fail(err)
		}
		trusted = append(trusted, prefix)
	}
	c, h := cfg.HTTP.CORS, cfg.HTTP
	p.live = gateway.Live{Router: router, Auth: authService, TokenHosts: tokenHosts, TrustedProxies: trusted,
		Limits: gateway.Limits{MaxConns: h.MaxConns, MaxConnsPerIP: h.MaxConnsPerIP, MaxBodySize: int64(h.MaxBodySize),
			RatePerSecond: h.RateLimit.PerSecond, RateBurst: h.RateLimit.Burst},
		Admin: p.admin, Admins: cfg.Lifecycle.Admins,
		Classify: func(tag string) string { return string(im.Classes.Of(tag)) },
		CORS: gateway.CORS{AllowedOrigins: c.AllowedOrigins, AllowedMethods: c.AllowedMethods,
			AllowedHeaders: c.AllowedHeaders, ExposedHeaders: c.ExposedHeaders,
			AllowCredentials: c.AllowCredentials, MaxAge: c.MaxAge}}
	return p, nil
}

// buildRegistries makes every configured registry; groups last, over the others.
// A proxy in keep (by name) is used as it is.
func buildRegistries(cfg *config.Config, store *cache.Store, im *lifecycle.Immutability, log *slog.Logger, keep map[string]*vhost.Proxy) ([]vhost.Registry, error) {
	byName := map[string]vhost.Registry{}
	var regs []vhost.Registry
	for _, r := range cfg.Registries {
		var reg vhost.Registry
		switch r.Type {
		case "hosted":
			reg = vhost.NewHosted(r.Name, store, vhost.HostedOptions{AllowSparseIndex: r.SparseIndex, Immutable: immutableHook(im, r.Name), Accessories: im.Accessories})
		case "proxy":
			if p := keep[r.Name]; p != nil {
				reg = p
				break
			}
			u := r.Upstream
			password, err := secret(u.PasswordFile, u.PasswordEnv)
			if err != nil {
				return nil, fmt.Errorf("registry %s: %w", r.Name, err)
			}
			client, err := upstream.New(upstream.Config{URL: u.URL, Username: u.Username, Password: password,
				CAFile: u.CAFile, Insecure: u.Insecure, Timeout: u.Timeout})
			if err != nil {
				return nil, fmt.Errorf("registry %s: %w", r.Name, err)
			}
			reg = vhost.NewProxy(r.Name, store, client, vhost.ProxyOptions{
				TagTTL: u.TagTTL, NegativeTTL: u.NegativeTTL, MaxSize: int64(u.MaxSize), Logger: log})
		default:
			continue
		}
		byName[r.Name] = reg
		regs = append(regs, reg)
	}
	for _, r := range cfg.Registries {
		if r.Type != "group" {
			continue
		}
		var members []vhost.Registry
		for _, m := range r.Members {
			members = append(members, byName[m])
		}
		g := vhost.NewGroup(r.Name, members, byName[r.PushTo], log)
		g.SetAccessories(im.Accessories)
		byName[r.Name] = g
		regs = append(regs, g)
	}
	return regs, nil
}

// secret reads a credential from a file or an environment variable.
func secret(file, env string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		return strings.TrimRight(string(b), "\r\n"), err // the line end an editor adds; spaces may be part of it
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", env)
		}
		return v, nil
	}
	return "", nil
}

// serverTLS is the listener's TLS: 1.2 at least (1.0 and 1.1 are refused), and for 1.2
// only forward-secret AEAD suites (TLS 1.3's are all of that kind); HTTP/1.1, which is
// what registry clients speak.
func serverTLS(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{GetCertificate: get, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}}
}

// warnOpenSecrets warns of each configured secret file that users other than its
// owner and group may read (mode o+r): a password, a key or the users file's hashes.
func warnOpenSecrets(cfg *config.Config, log *slog.Logger) {
	for _, f := range cfg.SecretFiles() {
		info, err := os.Stat(f.Path)
		if err != nil || info.Mode().Perm()&0o004 == 0 {
			continue
		}
		log.Warn("a secret file is readable by every user of this machine: chmod o-r it", "key", f.Key,
			"file", f.Path, "mode", info.Mode().Perm().String())
	}
}

// warnFileLimit warns when the process may open fewer files than http.max_conns
// connections need: past the limit connections fail to be accepted (and the store to
// open files) before max_conns answers them. (Go raises the soft limit to the hard one
// at start; the hard one is the operator's: ulimit -Hn, LimitNOFILE.)
func warnFileLimit(cfg *config.Config, log *slog.Logger) {
	var lim syscall.Rlimit
	need := uint64(cfg.HTTP.MaxConns) + fileLimitReserve
	if cfg.HTTP.MaxConns > 0 && syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < need {
		log.Warn("the open-file limit is below what http.max_conns needs: raise it (ulimit -n, LimitNOFILE) or lower http.max_conns",
			"open_file_limit", lim.Cur, "max_conns", cfg.HTTP.MaxConns, "needed", need)
	}
}

// fileLimitReserve is the files the server keeps open besides connections: the index
// (Badger's tables and logs), blobs being served and uploads being written.
const fileLimitReserve = 1024

// accessLogger writes the access log (log.access) in the log's format, at any level.
func accessLogger(c config.Log, w io.Writer) *slog.Logger {
	if !c.Access {
		return nil
	}
	c.Level = "info"
	return newLogger(c, w)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
