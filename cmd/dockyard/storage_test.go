package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/blobstore/s3test"
	"github.com/dockyard/dockyard/config"
)

// serveWith runs the server of configuration file path (its data in data) until the
// returned stop is called.
func serveWith(t *testing.T, path, data string) (addr string, stop func()) {
	t.Helper()
	addr, _, stop = serveApp(t, path, data)
	return addr, stop
}

// serveApp is serveWith, with the app (its jobs are started).
func serveApp(t *testing.T, path, data string) (addr string, a *app, stop func()) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data = data
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := openStore(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Serve(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	a, err = build(ctx, cfg, store, log)
	if err != nil {
		t.Fatal(err)
	}
	a.path = path
	a.start()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go a.gw.Serve(ln)
	return ln.Addr().String(), a, func() {
		cancel()
		a.jobs.Wait()
		a.gw.Shutdown(context.Background())
		a.close()
		store.Close()
	}
}

// A filesystem registry moved onto S3: every blob copied and verified, a second run
// copies nothing, and after the switch every image pulls byte-identical from the
// bucket alone.
func TestStorageMigrationToS3(t *testing.T) {
	srv := s3test.Need(t, s3server)
	bucket, err := srv.NewBucket(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	fsCfg, s3Cfg := filepath.Join(dir, "fs.yaml"), filepath.Join(dir, "s3.yaml")
	os.WriteFile(fsCfg, []byte("storage: {driver: filesystem}\n"), 0o600)
	t.Setenv("MIGRATE_TEST_SECRET", srv.Secret)
	os.WriteFile(s3Cfg, []byte(fmt.Sprintf(`storage:
  driver: s3
  s3: {endpoint: %q, bucket: %q, path_style: true, part_size: 5MiB, access_key_id: %q, secret_access_key_env: MIGRATE_TEST_SECRET}
`, srv.Endpoint, bucket, srv.Access)), 0o600)

	addr, stop := serveWith(t, fsCfg, data)
	images := map[string]v1.Image{}
	for i := range 3 {
		img, err := random.Image(int64(3<<20+i), 2)
		if err != nil {
			t.Fatal(err)
		}
		ref := fmt.Sprintf("%s/team/app%d:v1", addr, i)
		r, _ := name.ParseReference(ref, name.Insecure)
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
		images[fmt.Sprintf("team/app%d:v1", i)] = img
	}
	stop()

	migrate := func() string {
		var out bytes.Buffer
		if err := run([]string{"storage", "migrate", "--config", fsCfg, "--to-config", s3Cfg, "--data", data}, &out, io.Discard); err != nil {
			t.Fatalf("migrate: %v\n%s", err, out.String())
		}
		return out.String()
	}
	re := regexp.MustCompile(`(\d+) blobs: (\d+) copied .*, (\d+) already there, 0 corrupt`)
	counts := func(out string) []string { // the closing line's
		all := re.FindAllStringSubmatch(out, -1)
		if len(all) == 0 {
			return nil
		}
		return all[len(all)-1]
	}
	first := counts(migrate())
	if first == nil || first[1] != "9" || first[2] != "9" || first[3] != "0" {
		t.Fatalf("first run: %v, want 9 blobs (3 images of 2 layers and a config) copied", first)
	}
	second := counts(migrate())
	if second == nil || second[2] != "0" || second[3] != "9" {
		t.Fatalf("second run: %v, want nothing copied", second)
	}

	// The filesystem copies are gone: what is pulled now can only come from S3.
	os.RemoveAll(filepath.Join(data, "blobs"))
	addr, stop = serveWith(t, s3Cfg, data)
	defer stop()
	for ref, img := range images {
		r, _ := name.ParseReference(addr+"/"+ref, name.Insecure)
		got, err := remote.Image(r)
		if err != nil {
			t.Fatalf("%s after the switch: %v", ref, err)
		}
		want, _ := img.RawManifest()
		if raw, _ := got.RawManifest(); !bytes.Equal(raw, want) {
			t.Errorf("%s: manifest differs", ref)
		}
		if err := validate.Image(got); err != nil {
			t.Errorf("%s from S3: %v", ref, err)
		}
	}
	objects, _, err := srv.Keys(t.Context(), bucket, "blobs/")
	if err != nil || len(objects) != 9 {
		t.Errorf("the bucket holds %d blobs (%v), want 9", len(objects), err)
	}
}
