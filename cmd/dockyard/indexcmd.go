package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/index"
)

// indexCommand: dockyard index migrate|copy.
func indexCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: dockyard index migrate [--config FILE] | index copy --from badger:DIR --config FILE")
	}
	switch args[0] {
	case "migrate":
		return indexMigrate(args[1:], stdout)
	case "copy":
		return indexCopy(args[1:], stdout)
	}
	return fmt.Errorf("unknown index command %q (migrate, copy)", args[0])
}

// takeAlone takes a shared index for this command alone (see index.Presence), or
// fails with refusal while an instance serves it.
func takeAlone(p interface {
	Alone(context.Context) (context.Context, func(), bool, error)
}, refusal string) (held context.Context, release func(), err error) {
	held, release, alone, err := p.Alone(context.Background())
	if err != nil {
		return nil, nil, err
	}
	if !alone {
		return nil, nil, errors.New(refusal)
	}
	return held, release, nil
}

// indexMigrate brings the configured index up to date offline: the PostgreSQL schema,
// then the store's format (what every start does too).
func indexMigrate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("index migrate", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, store, err := openOffline(*path, *data)
	if err != nil {
		return err
	}
	if err := store.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "index (%s) is up to date\n", cfg.Index.Driver)
	return nil
}

// indexCopy moves a single node's Badger index into the configured index (PostgreSQL):
// every key, idempotently, verified by a digest of both sides.
func indexCopy(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("index copy", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file of the destination (index.driver: postgres)")
	from := fs.String("from", "", "the source: badger:DIR, DIR a data directory (or its index directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, ok := strings.CutPrefix(*from, "badger:")
	if !ok || dir == "" {
		return errors.New("index copy: --from badger:DIR is required")
	}
	if _, err := os.Stat(filepath.Join(dir, "index")); err == nil {
		dir = filepath.Join(dir, "index")
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return fmt.Errorf("index copy: %s holds no Badger index", dir)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if cfg.Index.Driver != "postgres" {
		return errors.New("index copy: the destination configuration's index.driver must be postgres")
	}
	cfg.Index.Postgres.Timeout = max(cfg.Index.Postgres.Timeout, time.Hour) // whole-index scans verify the copy
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := index.OpenBadger(index.BadgerOptions{Dir: dir, Logger: log})
	if err != nil {
		return fmt.Errorf("%w (is a dockyard running on %s?)", err, dir)
	}
	defer src.Close()
	dst, err := indexDB(cfg, log)
	if err != nil {
		return err
	}
	defer dst.Close()
	if p, ok := dst.(index.Presence); ok {
		_, release, err := takeAlone(p, "index copy: dockyard instances are serving the destination; stop them first")
		if err != nil {
			return err
		}
		defer release()
	}
	last := time.Now()
	rep, err := index.Copy(context.Background(), dst, src, func(n int) {
		if time.Since(last) > 5*time.Second {
			fmt.Fprintf(stdout, "… %d keys\n", n)
			last = time.Now()
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "index copy: %d keys, %d written, verified (%s)\n", rep.Keys, rep.Written, rep.Sum)
	return nil
}
