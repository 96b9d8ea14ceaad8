package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/dockyard/dockyard/oci"
)

// CopyReport counts what Copy did.
type CopyReport struct {
	Blobs   int64 `json:"blobs"`   // blobs the source holds
	Copied  int64 `json:"copied"`  // copied now
	Skipped int64 `json:"skipped"` // already in the destination with their size
	Corrupt int64 `json:"corrupt"` // not copied: their bytes do not hash to their digest
	Bytes   int64 `json:"bytes"`   // bytes copied
}

// Copy copies every blob of src into dst, verifying each blob's digest on the way
// (a blob whose bytes do not match is reported, not copied), skipping blobs dst
// already holds with the same size: run again after an interruption, it copies only
// what is missing. Uploads in progress are not copied. progress, when set, is called
// after each blob with the counts so far. It returns the first error of a store;
// corrupt blobs are counted, not errors.
func Copy(ctx context.Context, src, dst Store, workers int, progress func(CopyReport)) (CopyReport, error) {
	var rep struct {
		blobs, copied, skipped, corrupt, bytes atomic.Int64
	}
	snapshot := func() CopyReport {
		return CopyReport{Blobs: rep.blobs.Load(), Copied: rep.copied.Load(), Skipped: rep.skipped.Load(),
			Corrupt: rep.corrupt.Load(), Bytes: rep.bytes.Load()}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan Blob)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range jobs {
				copied, err := copyBlob(ctx, src, dst, b)
				switch {
				case errors.Is(err, errCorrupt):
					rep.corrupt.Add(1)
				case err != nil:
					fail(fmt.Errorf("copy %s: %w", b.Digest, err))
				case copied:
					rep.copied.Add(1)
					rep.bytes.Add(b.Size)
				default:
					rep.skipped.Add(1)
				}
				if progress != nil {
					mu.Lock()
					progress(snapshot())
					mu.Unlock()
				}
			}
		}()
	}
	err := src.Walk(ctx, func(b Blob) error {
		rep.blobs.Add(1)
		select {
		case jobs <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return snapshot(), firstErr
	}
	return snapshot(), err
}

var errCorrupt = errors.New("blob does not match its digest")

// copyBlob copies one blob unless dst has it; the copy commits only if the bytes
// read hash to the digest.
func copyBlob(ctx context.Context, src, dst Store, b Blob) (bool, error) {
	if size, err := dst.Stat(ctx, b.Digest); err == nil && size == b.Size {
		return false, nil
	} else if err != nil && !errors.Is(err, ErrNotExist) {
		return false, err
	}
	rc, size, err := src.Open(ctx, b.Digest)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	id := "copy-" + b.Digest.Encoded()[:32]
	dst.RemoveUpload(ctx, id) // left by an interrupted run
	w, err := dst.NewWriter(ctx, id)
	if err != nil {
		return false, err
	}
	h := b.Digest.Algorithm().New()
	n, err := io.Copy(io.MultiWriter(w, h), rc)
	if err == nil && n != size {
		err = fmt.Errorf("read %d bytes of %d", n, size)
	}
	if err != nil {
		w.Cancel()
		return false, err
	}
	if oci.FromHash(b.Digest.Algorithm(), h) != b.Digest {
		w.Cancel()
		return false, errCorrupt
	}
	if err := w.Commit(b.Digest); err != nil {
		w.Cancel()
		return false, err
	}
	return true, nil
}
