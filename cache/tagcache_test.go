package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

// emptyIndex is a manifest that needs no blobs; n makes its digest unique.
func emptyIndex(t *testing.T, n int) ([]byte, *oci.Manifest, oci.Digest) {
	t.Helper()
	b := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[],"annotations":{"n":"%d"}}`, oci.MediaTypeOCIIndex, n))
	m, err := oci.ParseManifest(oci.MediaTypeOCIIndex, b)
	if err != nil {
		t.Fatal(err)
	}
	return b, m, oci.FromBytes(oci.SHA256, b)
}

// A tag read right after it moved must show the new manifest, however many readers
// are filling the tag cache meanwhile.
func TestTagReadsNeverSeeAMovedTagsOldManifest(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ref := oci.Reference{Tag: "latest"}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				s.GetManifest(ctx, "r", "app", ref)
			}
		}()
	}
	for i := range 200 {
		b, m, d := emptyIndex(t, i)
		err := s.PutManifest(ctx, PutManifestRequest{Registry: "r", Repo: "app", Digest: d, Content: b, Manifest: m, Tags: []oci.Tag{"latest"}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetManifest(ctx, "r", "app", ref)
		if err != nil || got.Digest != d {
			t.Fatalf("after moving the tag to %s (push %d), read %v %v", d, i, got, err)
		}
	}
	if err := s.DeleteTag(ctx, "r", "app", "latest", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetManifest(ctx, "r", "app", ref); err == nil {
		t.Fatal("deleted tag still resolves")
	}
	stop.Store(true)
	wg.Wait()
}
