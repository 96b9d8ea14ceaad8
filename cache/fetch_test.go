package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// A fetch that fails drops what it wrote (the filesystem's writer truncates what it did
// not flush), so a reader behind it finds the file shorter than what was written: it
// gets the failure at once, whether it reads or sends the file on, and never spins
// reading nothing.
func TestAReaderBehindAFailedFetchGetsItsFailure(t *testing.T) {
	s := testStore(t, nil)
	d := oci.FromBytes(oci.SHA256, []byte("a blob sent without a length"))
	for _, c := range []struct {
		name string
		read func(io.Reader) error
	}{
		{"read", func(r io.Reader) error { _, err := io.ReadAll(r); return err }},
		{"sent to a file", func(r io.Reader) error {
			f, err := os.Create(filepath.Join(t.TempDir(), "out"))
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(f, r) // the reader's WriteTo, with sendfile
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := s.NewFetch(context.Background(), d, -1, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			rc, ok := f.Reader(context.Background())
			if !ok {
				t.Fatal("no reader")
			}
			defer rc.Close()
			if err := f.Fill(bytes.NewReader(make([]byte, 4<<20)), "up", "org/app"); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("fill past the limit: %v", err)
			}
			done := make(chan error, 1)
			go func() { done <- c.read(rc) }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrTooLarge) {
					t.Errorf("reading a fetch that failed: %v, want its failure", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a reader behind a failed fetch still reading after 10 s")
			}
		})
	}
}
