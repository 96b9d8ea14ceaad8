package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// slowPush uploads layers in chunks with pauses, then the manifest last, as a slow
// client would. It returns the manifest and the manifest PUT's answer.
func slowPush(r *testRegistry, repo, tag string, layers [][]byte, config []byte, pause time.Duration) ([]byte, response) {
	for _, b := range append(layers, config) {
		loc := r.startUpload(repo)
		half := len(b) / 2
		resp := r.do("PATCH", loc, b[:half], "Content-Range", "0-"+strconv.Itoa(half-1))
		time.Sleep(pause)
		resp = r.do("PUT", resp.Header.Get("Location")+"?digest="+sha256Of(b), b[half:], "Content-Range", fmt.Sprintf("%d-%d", half, len(b)-1))
		if resp.StatusCode != 201 {
			return nil, resp
		}
	}
	time.Sleep(pause)
	m := imageManifest(config, layers...)
	return m, r.do("PUT", "/v2/"+repo+"/manifests/"+tag, m, "Content-Type", mtOCIManifest)
}

func TestGarbageCollectionRacingPushesNeverLosesAnAcknowledgedImage(t *testing.T) {
	dir := t.TempDir()
	r := startRegistry(t, dir, registryOptions{})
	shared := make([]byte, 64<<10)
	rand.Read(shared)

	ctx, stop := context.WithCancel(context.Background())
	var gcRuns atomic.Int64
	gcDone := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			// A grace period about as long as a slow push: some layers are collected
			// before their manifest arrives (that push is refused), most are not.
			if _, err := r.store.CollectGarbage(ctx, cache.GCOptions{Grace: 60 * time.Millisecond}); err != nil && ctx.Err() == nil {
				gcDone <- err
				return
			}
			gcRuns.Add(1)
		}
		gcDone <- nil
	}()

	type pushed struct {
		repo, tag string
		manifest  []byte
		layers    [][]byte
	}
	var mu sync.Mutex
	var acked []pushed
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				own := make([]byte, 32<<10)
				rand.Read(own)
				layers := [][]byte{shared, own}
				config := []byte(fmt.Sprintf(`{"client":%d,"image":%d}`, c, i))
				repo, tag := fmt.Sprintf("race/c%d", c), fmt.Sprintf("v%d", i)
				pause := time.Duration(c%4) * 15 * time.Millisecond
				m, resp := slowPush(r, repo, tag, layers, config, pause)
				switch {
				case resp.StatusCode == http.StatusCreated:
					mu.Lock()
					acked = append(acked, pushed{repo, tag, m, append(layers, config)})
					mu.Unlock()
				case resp.StatusCode != http.StatusBadRequest || !bytes.Contains(resp.body, []byte("MANIFEST_BLOB_UNKNOWN")):
					t.Errorf("refused push %s:%s: %d %s", repo, tag, resp.StatusCode, resp.body)
				}
			}
		}()
	}
	wg.Wait()
	stop()
	if err := <-gcDone; err != nil {
		t.Fatalf("garbage collection: %v", err)
	}
	if gcRuns.Load() < 5 || len(acked) == 0 {
		t.Fatalf("%d collections during %d acknowledged pushes: the race did not happen", gcRuns.Load(), len(acked))
	}
	t.Logf("%d acknowledged pushes of 48 (the rest refused as their layers were collected) with %d collections running", len(acked), gcRuns.Load())
	// Collect again now that nothing is in flight: acknowledged content must survive.
	if _, err := r.store.CollectGarbage(context.Background(), cache.GCOptions{Grace: 0}); err != nil {
		t.Fatal(err)
	}
	for _, p := range acked {
		got := r.do("GET", "/v2/"+p.repo+"/manifests/"+p.tag, nil)
		if got.StatusCode != 200 || !bytes.Equal(got.body, p.manifest) {
			t.Fatalf("%s:%s lost: %d", p.repo, p.tag, got.StatusCode)
		}
		for _, b := range p.layers {
			if got := r.do("GET", "/v2/"+p.repo+"/blobs/"+sha256Of(b), nil); got.StatusCode != 200 || !bytes.Equal(got.body, b) {
				t.Fatalf("%s:%s lost blob %s: %d", p.repo, p.tag, sha256Of(b), got.StatusCode)
			}
		}
	}

	if rep, err := r.store.Check(context.Background(), cache.CheckOptions{VerifyDigests: true}); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("fsck after the race: %v %v", err, rep.Problems)
	}

	// Delete every tag and manifest; collection then leaves nothing behind.
	for _, p := range acked {
		r.do("DELETE", "/v2/"+p.repo+"/manifests/"+sha256Of(p.manifest), nil)
	}
	if _, err := r.store.PruneUntagged(context.Background(), "default", nil, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.CollectGarbage(context.Background(), cache.GCOptions{Grace: 0}); err != nil {
		t.Fatal(err)
	}
	if files := r.blobFiles(); len(files) != 0 {
		t.Errorf("%d blob files remain, e.g. %s", len(files), files[0])
	}
	for _, p := range acked {
		for _, b := range p.layers {
			if br, _, _ := r.store.RefCounts(oci.Digest(sha256Of(b))); br != -1 {
				t.Fatalf("blob %s still has an index record", sha256Of(b))
			}
		}
	}
}

func TestCollectingAnIndexTakesItsChildrenAndLayersUnlessSharedElsewhere(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	idx, err := random.Index(4096, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r.ref("multi/app:v1"), idx); err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	keepChild, _ := idx.Image(m.Manifests[0].Digest)
	// The first child is also pushed, tagged, to another repository: it must survive.
	if err := remote.Write(r.ref("other/app:keep"), keepChild); err != nil {
		t.Fatal(err)
	}
	goneChild, _ := idx.Image(m.Manifests[1].Digest)
	goneLayers, _ := goneChild.Layers()
	keptLayers, _ := keepChild.Layers()

	if resp := r.do("DELETE", "/v2/multi/app/manifests/v1", nil); resp.StatusCode != 202 {
		t.Fatalf("delete the index's last tag: %d", resp.StatusCode)
	}
	// Untagged now, the index and its children go; the shared child stays for other/app.
	if _, err := r.store.PruneUntagged(context.Background(), "default", nil, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.CollectGarbage(context.Background(), cache.GCOptions{Grace: 0}); err != nil {
		t.Fatal(err)
	}
	for _, l := range goneLayers {
		d := digestOf(t, l)
		if _, err := os.Stat(filepath.Join(r.dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())); !os.IsNotExist(err) {
			t.Errorf("layer %s of the collected child is still stored", d)
		}
	}
	if b, mr, _ := r.store.RefCounts(digestOf(t, goneChild)); b != -1 || mr != -1 {
		t.Errorf("collected child still indexed: %d %d", b, mr)
	}
	got, err := remote.Image(r.ref("other/app:keep"))
	if err != nil {
		t.Fatalf("the shared child is gone: %v", err)
	}
	if digestOf(t, got) != digestOf(t, keepChild) {
		t.Fatal("shared child changed")
	}
	for _, l := range keptLayers {
		if resp := r.do("GET", "/v2/other/app/blobs/"+string(digestOf(t, l)), nil); resp.StatusCode != 200 {
			t.Errorf("layer of the shared child: %d", resp.StatusCode)
		}
	}
}

func TestStaleUploadsArePurged(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	loc := r.startUpload("purge/app")
	r.do("PATCH", loc, []byte("abandoned"), "Content-Range", "0-8")
	time.Sleep(10 * time.Millisecond)
	n, err := r.store.PurgeUploads(context.Background(), time.Millisecond)
	if err != nil || n == 0 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if resp := r.do("GET", loc, nil); resp.StatusCode != 404 {
		t.Errorf("purged upload: %d", resp.StatusCode)
	}
	if left, _ := os.ReadDir(filepath.Join(r.dir, "uploads")); len(left) != 0 {
		t.Errorf("%d upload files left", len(left))
	}
}

func TestFsckFindsAndRepairsInconsistencies(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	layer := []byte("a layer whose file will vanish")
	r.pushImage("fsck/app", "v1", []byte(`{"fsck":1}`), layer)
	ctx := context.Background()
	if rep, err := r.store.Check(ctx, cache.CheckOptions{VerifyDigests: true}); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("a healthy store: %v %v", err, rep.Problems)
	}
	d := oci.Digest(sha256Of(layer))
	os.Remove(filepath.Join(r.dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded()))
	rep, err := r.store.Check(ctx, cache.CheckOptions{Repair: true})
	if err != nil || len(rep.Problems) == 0 || rep.Repaired == 0 {
		t.Fatalf("missing file not found: %v %+v", err, rep)
	}
	if rep, _ := r.store.Check(ctx, cache.CheckOptions{}); len(rep.Problems) != 0 {
		t.Errorf("after repair: %v", rep.Problems)
	}
	if resp := r.do("GET", "/v2/fsck/app/blobs/"+string(d), nil); resp.StatusCode != 404 {
		t.Errorf("the lost blob: %d", resp.StatusCode)
	}
}
