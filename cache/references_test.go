package cache

import (
	"context"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

const (
	mtConfig = "application/vnd.oci.image.config.v1+json"
	mtLayer  = "application/vnd.oci.image.layer.v1.tar"
	mtImage  = "application/vnd.oci.image.manifest.v1+json"
)

// A manifest that lists a layer not stored yet waits as a pending reference. When it
// commits while the layer's record is being created (after that transaction counted
// the pending references), the record must still count it: otherwise GC collects a
// layer a manifest lists.
func TestAPendingReferenceRacingTheRecordItWaitsForIsCounted(t *testing.T) {
	s := testStore(t, nil)
	layer := []byte("a layer arriving while a sparse manifest names it")
	d := oci.FromBytes(oci.SHA256, layer)
	config := []byte("{}")
	m := imageManifest(desc(mtConfig, oci.FromBytes(oci.SHA256, config), len(config)), desc(mtLayer, d, len(layer)))
	// Both repositories exist already, so the two transactions share no other key.
	putBlob(t, s, "up", "lib/app", []byte("something"))
	putBlob(t, s, "up", "lib/other", []byte("something"))
	fired := false
	hookBeforeRecordCommit = func(x oci.Digest) {
		if x != d || fired {
			return
		}
		fired = true
		putManifest(t, s, "up", "lib/other", m, true, "1.0") // commits inside the record's transaction
	}
	defer func() { hookBeforeRecordCommit = nil }()
	putBlob(t, s, "up", "lib/app", layer)
	if !fired {
		t.Fatal("the hook never ran")
	}
	if b, _ := refs(t, s, d); b != 1 {
		t.Errorf("layer reference count %d, want 1 (the manifest that lists it)", b)
	}
	if _, err := s.CollectGarbage(context.Background(), GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatBlob(context.Background(), "up", "lib/app", d); err != nil {
		t.Errorf("GC collected a layer a manifest lists: %v", err)
	}
	clean(t, s)
}

// The same digest can be waited for as a layer by one manifest and as a child manifest
// by an index: each arrival takes only its own kind of pending reference.
func TestPendingLayerAndChildReferencesAreKeptApart(t *testing.T) {
	s := testStore(t, nil)
	config := []byte("{}")
	cd := oci.FromBytes(oci.SHA256, config)
	x := imageManifest(desc(mtConfig, cd, len(config))) // X: bytes both a manifest and a layer
	xd := oci.FromBytes(oci.SHA256, x)
	idx := indexManifest(desc(mtImage, xd, len(x)))
	putManifest(t, s, "dev", "app", idx, true, "multi") // waits for X as a child manifest
	img := imageManifest(desc(mtConfig, cd, len(config)), desc(mtLayer, xd, len(x)))
	putManifest(t, s, "dev", "app", img, true, "img") // waits for X as a layer
	putBlob(t, s, "dev", "app", config)
	putBlob(t, s, "dev", "app", x) // X arrives as a blob
	if b, _ := refs(t, s, xd); b != 1 {
		t.Errorf("X as a blob: %d references, want 1 (the image listing it as a layer)", b)
	}
	putManifest(t, s, "dev", "app", x, false) // X arrives as a manifest
	if _, m := refs(t, s, xd); m != 2 {
		t.Errorf("X as a manifest: %d references, want 2 (the index, and the repository holding it)", m)
	}
	clean(t, s)
}
