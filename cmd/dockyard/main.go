// Command dockyard runs the registry (serve) and its administrative commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/vhost"
)

const usage = `dockyard: a private container registry and registry federation gateway.

Usage:
  dockyard serve [--config FILE] [--listen ADDR] [--data DIR]
  dockyard check-config --config FILE

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

	store, err := cache.Open(cache.Options{Dir: cfg.Data, Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	gw, err := build(cfg, store, log)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	log.Info("dockyard listening", "addr", l.Addr().String(), "data", cfg.Data, "registries", len(cfg.Registries))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- gw.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return gw.Shutdown(sctx)
}

// build wires the configured registries and routes into a gateway.
func build(cfg *config.Config, store *cache.Store, log *slog.Logger) (*gateway.Gateway, error) {
	var regs []vhost.Registry
	for _, r := range cfg.Registries {
		regs = append(regs, vhost.NewHosted(r.Name, store, vhost.HostedOptions{AllowSparseIndex: r.SparseIndex}))
	}
	var routes []vhost.Route
	for _, r := range cfg.Routes {
		routes = append(routes, vhost.Route{Host: r.Host, Registry: r.Registry})
	}
	router, err := vhost.NewRouter(regs, routes)
	if err != nil {
		return nil, err
	}
	c := cfg.HTTP.CORS
	return gateway.New(gateway.Options{
		Router: router, Logger: log, MaxManifestSize: int64(cfg.HTTP.MaxManifestSize),
		ReadTimeout: cfg.HTTP.ReadTimeout, UploadTimeout: cfg.HTTP.UploadTimeout,
		IdleTimeout: cfg.HTTP.IdleTimeout, WriteTimeout: cfg.HTTP.WriteTimeout,
		CORS: gateway.CORS{AllowedOrigins: c.AllowedOrigins, AllowedMethods: c.AllowedMethods,
			AllowedHeaders: c.AllowedHeaders, ExposedHeaders: c.ExposedHeaders,
			AllowCredentials: c.AllowCredentials, MaxAge: c.MaxAge},
	}), nil
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
