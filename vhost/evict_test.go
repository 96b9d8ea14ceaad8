package vhost_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

func TestProxyCacheEvictsLeastRecentlyPulledAndStale(t *testing.T) {
	u := newTestUpstream(t)
	imgs := map[string]string{}
	layers := map[string][]oci.Digest{} // each image's config and layers
	for _, tag := range []string{"old", "mid", "new"} {
		img := randomImage(t, 64<<10, 1)
		if err := remote.Write(ref(t, u.host()+"/ev/app:"+tag), img); err != nil {
			t.Fatal(err)
		}
		imgs[tag] = digestOf(t, img)
		cfg, _ := img.ConfigName()
		layers[tag] = append(layers[tag], oci.Digest(cfg.String()))
		ls, _ := img.Layers()
		for _, l := range ls {
			layers[tag] = append(layers[tag], oci.Digest(digestOf(t, l)))
		}
	}
	clock := &fakeClock{now: time.Unix(2e9, 0)}
	s := startProxy(t, u, proxyConfig{clock: clock})
	pull := func(tag string) {
		t.Helper()
		img, err := remote.Image(ref(t, s.addr+"/ev/app:"+tag))
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatal(err)
		}
	}
	stored := func(tag string) (n int) {
		t.Helper()
		for _, d := range layers[tag] {
			if b, _, err := s.store.RefCounts(d); err == nil && b >= 0 {
				n++
			}
		}
		return n
	}
	for _, tag := range []string{"old", "mid", "new"} {
		clock.Advance(time.Minute)
		pull(tag)
	}
	ctx := context.Background()
	// Everything pulled now: nothing is stale, and no size limit.
	if rep, err := s.store.EvictCache(ctx, "up", 0, 24*time.Hour); err != nil || rep.Manifests != 0 {
		t.Fatalf("nothing stale: %+v %v", rep, err)
	}
	// Over a size limit, the least recently pulled go first ("old", pushed... pulled first).
	rep, err := s.store.EvictCache(ctx, "up", 100<<10, 0)
	if err != nil || rep.Manifests == 0 || rep.Bytes == 0 {
		t.Fatalf("size limit: %+v %v", rep, err)
	}
	if _, err := s.store.CollectGarbage(ctx, cache.GCOptions{Grace: 0}); err != nil {
		t.Fatal(err)
	}
	// The newest pull stays cached, whole: served with the upstream down. The least
	// recently pulled image is gone, its config and layers too.
	u.set(func(u *testUpstream) { u.failing = true })
	img, err := remote.Image(ref(t, s.addr+"/ev/app@"+imgs["new"]))
	if err == nil {
		err = validate.Image(img)
	}
	if err != nil {
		t.Errorf("the most recently pulled image was evicted: %v", err)
	}
	if _, err := remote.Image(ref(t, s.addr+"/ev/app@"+imgs["old"])); err == nil {
		t.Errorf("the least recently pulled image survived the size limit")
	}
	if n := stored("old"); n != 0 {
		t.Errorf("%d of the evicted image's blobs are still stored", n)
	}
	if n := stored("new"); n != len(layers["new"]) {
		t.Errorf("%d of %d blobs of the kept image are stored", n, len(layers["new"]))
	}
	u.set(func(u *testUpstream) { u.failing = false })
	// A month later, nothing was pulled: all of it is stale.
	clock.Advance(30 * 24 * time.Hour)
	if rep, err := s.store.EvictCache(ctx, "up", 0, 7*24*time.Hour); err != nil || rep.Manifests == 0 {
		t.Fatalf("stale content: %+v %v", rep, err)
	}
	s.store.CollectGarbage(ctx, cache.GCOptions{Grace: 0})
	if files := countBlobFiles(t, s.dir); files != 0 {
		t.Errorf("%d blob files left after evicting everything", files)
	}
	pull("new") // fetched again from the upstream
}

func countBlobFiles(t *testing.T, dir string) int {
	n := 0
	filepath.WalkDir(filepath.Join(dir, "blobs"), func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			n++
		}
		return nil
	})
	return n
}
