package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/config"
)

// storageCommand: dockyard storage migrate --config OLD --to-config NEW [--data DIR].
func storageCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "migrate" {
		return errors.New("usage: dockyard storage migrate --config OLD.yaml --to-config NEW.yaml [--data DIR] [--workers N]")
	}
	fs := flag.NewFlagSet("storage migrate", flag.ContinueOnError)
	from := fs.String("config", "", "the configuration whose blob storage is copied (empty: the embedded default)")
	to := fs.String("to-config", "", "the configuration whose blob storage receives the copy")
	data := fs.String("data", "", "data directory (for a filesystem store), overrides both configurations")
	workers := fs.Int("workers", 4, "blobs copied at once")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *to == "" {
		return errors.New("storage migrate: --to-config is required")
	}
	open := func(path string) (blobstore.Store, string, error) {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, "", err
		}
		if *data != "" {
			cfg.Data = *data
		}
		s, err := blobStore(cfg)
		if err == nil && s == nil {
			s, err = blobstore.NewFS(cfg.Data)
		}
		if err != nil {
			return nil, "", err
		}
		return s, s.String(), nil
	}
	src, srcName, err := open(*from)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	dst, dstName, err := open(*to)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if srcName == dstName {
		return fmt.Errorf("source and destination are the same store (%s)", srcName)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "migrate: copying every blob of %s into %s\n", srcName, dstName)
	var last time.Time
	line := func(r blobstore.CopyReport) string {
		return fmt.Sprintf("migrate: %d blobs: %d copied (%s), %d already there, %d corrupt (not copied)",
			r.Blobs, r.Copied, humanize.IBytes(uint64(r.Bytes)), r.Skipped, r.Corrupt)
	}
	rep, err := blobstore.Copy(ctx, src, dst, *workers, func(r blobstore.CopyReport) {
		if time.Since(last) >= time.Second {
			last = time.Now()
			fmt.Fprintln(stdout, line(r))
		}
	})
	fmt.Fprintln(stdout, line(rep))
	if err != nil {
		return fmt.Errorf("%w (run the migration again: it copies only what is missing)", err)
	}
	if rep.Corrupt > 0 {
		return fmt.Errorf("%d blobs do not match their digests and were not copied: run dockyard fsck --verify-digests on the source", rep.Corrupt)
	}
	fmt.Fprintln(stdout, "migrate: done; switch the configuration to the new storage and restart dockyard")
	return nil
}
