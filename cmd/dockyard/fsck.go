package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/dockyard/dockyard/cache"
)

// fsckCommand: dockyard fsck [--repair] [--verify-digests].
func fsckCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fsck", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory")
	repair := fs.Bool("repair", false, "fix what can be fixed")
	verify := fs.Bool("verify-digests", false, "re-hash every blob file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	_, store, err := openOffline(*path, *data)
	if err != nil {
		return err
	}
	defer store.Close()
	var held context.Context
	if *repair {
		// A repair writes what it recounted from one snapshot: a push meanwhile would
		// be undone. On a shared index, the instances must be stopped first, and stay
		// stopped (they refuse to start while this holds the index).
		h, release, err := takeAlone(store, "fsck --repair: dockyard instances are serving this index; stop them first (fsck without --repair runs beside them)")
		if err != nil {
			return err
		}
		defer release()
		held = h
	}
	rep, err := store.Check(context.Background(), cache.CheckOptions{Repair: *repair, VerifyDigests: *verify, Alone: held})
	if err != nil {
		return err
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, p)
	}
	fmt.Fprintf(stdout, "fsck: %d blobs, %d manifests, %d tags checked; %d problems", rep.Blobs, rep.Manifests, rep.Tags, len(rep.Problems))
	if *repair {
		fmt.Fprintf(stdout, ", %d repaired", rep.Repaired)
	}
	fmt.Fprintln(stdout)
	if len(rep.Problems) > rep.Repaired {
		return fmt.Errorf("%d problems remain", len(rep.Problems)-rep.Repaired)
	}
	return nil
}
