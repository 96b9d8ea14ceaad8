package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/oci"
)

func (r *testRegistry) ref(s string) name.Reference {
	r.t.Helper()
	ref, err := name.ParseReference(r.addr+"/"+s, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	return ref
}

func mustLayer(t *testing.T, size int64) v1.Layer {
	t.Helper()
	l, err := random.Layer(size, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ociImage(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, x interface{ Digest() (v1.Hash, error) }) oci.Digest {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return oci.Digest(h.String())
}

func configDigest(t *testing.T, img v1.Image) oci.Digest {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return oci.Digest(h.String())
}

func TestConcurrentPushesOfImagesSharingLayers(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	const clients = 32
	shared := []v1.Layer{mustLayer(t, 256<<10), mustLayer(t, 64<<10)}
	common := ociImage(t, shared[0], mustLayer(t, 32<<10)) // pushed by every client to one repo
	images := make([]v1.Image, clients)
	for i := range images {
		images[i] = ociImage(t, shared[0], shared[1], mustLayer(t, 16<<10))
	}

	var wg sync.WaitGroup
	errs := make(chan error, 2*clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := remote.Write(r.ref(fmt.Sprintf("conc/c%02d:v1", i)), images[i]); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
			if err := remote.Write(r.ref("conc/common:latest"), common); err != nil {
				errs <- fmt.Errorf("client %d, common image: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	for i, want := range images {
		got, err := remote.Image(r.ref(fmt.Sprintf("conc/c%02d:v1", i)))
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
		if digestOf(t, got) != digestOf(t, want) {
			t.Errorf("image %d: pulled %s, pushed %s", i, digestOf(t, got), digestOf(t, want))
		}
		if err := validate.Image(got); err != nil {
			t.Errorf("image %d does not validate: %v", i, err)
		}
	}

	// Every blob is one file, and no upload is left behind.
	for _, l := range shared {
		d := digestOf(t, l)
		if _, err := os.Stat(filepath.Join(r.dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())); err != nil {
			t.Errorf("shared layer %s: %v", d, err)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(r.dir, "uploads")); len(left) != 0 {
		t.Errorf("%d upload files left behind", len(left))
	}

	// Reference counts: a blob counts one per manifest listing it, a manifest one per
	// repository holding it (links of blobs to repositories do not count).
	expectRefs := func(what string, d oci.Digest, wantBlob, wantManifest int64) {
		t.Helper()
		b, m, err := r.store.RefCounts(d)
		if err != nil {
			t.Fatal(err)
		}
		if b != wantBlob || m != wantManifest {
			t.Errorf("%s %s: blob refs %d, manifest refs %d; want %d, %d", what, d, b, m, wantBlob, wantManifest)
		}
	}
	none := int64(-1)
	expectRefs("shared layer 0", digestOf(t, shared[0]), clients+1, none) // 32 images + the common one
	expectRefs("shared layer 1", digestOf(t, shared[1]), clients, none)
	for i, img := range images {
		layers, _ := img.Layers()
		expectRefs(fmt.Sprintf("unique layer %d", i), digestOf(t, layers[2]), 1, none)
		expectRefs(fmt.Sprintf("config %d", i), configDigest(t, img), 1, none)
		expectRefs(fmt.Sprintf("manifest %d", i), digestOf(t, img), none, 1)
	}
	expectRefs("common manifest", digestOf(t, common), none, 1)
	expectRefs("common config", configDigest(t, common), 1, none)
}
