package cache

import (
	"context"
	"testing"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// signedImage is an image with a cosign-style signature tag, an attestation of that
// signature, and an OCI 1.1 referrer.
type signedImage struct {
	subject, sig, sigAtt, referrer oci.Digest
	sigTag, attTag                 oci.Tag
}

// artifact stores an artifact manifest (about, with a subject field when referrer)
// under tags and returns its digest.
func artifact(t *testing.T, s *Store, repo, kind string, about oci.Digest, referrer bool, tags ...oci.Tag) oci.Digest {
	t.Helper()
	layer := []byte(kind + " of " + string(about))
	ld := putBlob(t, s, "r", repo, layer)
	cfg := []byte("{}")
	cd := putBlob(t, s, "r", repo, cfg)
	subject := ""
	if referrer {
		subject = `,"subject":` + desc("application/vnd.oci.image.manifest.v1+json", about, 1)
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.` + kind +
		`","config":` + desc("application/vnd.oci.empty.v1+json", cd, len(cfg)) + `,"layers":[` + desc("application/vnd.example."+kind, ld, len(layer)) + `]` + subject + `}`)
	return putManifest(t, s, "r", repo, m, false, tags...)
}

func pushSigned(t *testing.T, s *Store, repo, name string, tags ...oci.Tag) signedImage {
	t.Helper()
	cfg := []byte(`{"image":"` + name + `"}`)
	layer := []byte("layer of " + name)
	m := imageManifest(desc(mtConfig, putBlob(t, s, "r", repo, cfg), len(cfg)), desc(mtLayer, putBlob(t, s, "r", repo, layer), len(layer)))
	var im signedImage
	im.subject = putManifest(t, s, "r", repo, m, false, tags...)
	im.sigTag = oci.AccessoryTag(im.subject, ".sig")
	im.sig = artifact(t, s, repo, "signature", im.subject, false, im.sigTag)
	im.attTag = oci.AccessoryTag(im.sig, ".att")
	im.sigAtt = artifact(t, s, repo, "attestation", im.sig, false, im.attTag)
	im.referrer = artifact(t, s, repo, "sbom", im.subject, true)
	return im
}

// has says whether repo holds manifest d, and whether tag points at it.
func has(t *testing.T, s *Store, repo string, d oci.Digest, tag oci.Tag) (manifest, tagged bool) {
	t.Helper()
	_, err := s.GetManifest(context.Background(), "r", repo, oci.Reference{Digest: d})
	manifest = err == nil
	if tag != "" {
		got, err := s.GetManifest(context.Background(), "r", repo, oci.Reference{Tag: tag})
		tagged = err == nil && got.Digest == d
	}
	return manifest, tagged
}

// A deleted image's accessory tags, the manifests they point at and its referrers go
// after the GC grace — an attestation of its signature at the next collection —, and
// nothing of another image's.
func TestAccessoriesGoWithTheirDeletedSubjectAfterTheGrace(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	gone := pushSigned(t, s, "app", "gone", "1.0.0")
	kept := pushSigned(t, s, "app", "kept", "2.0.0")
	// An accessory manifest also tagged by a tag of its own stays (the tag keeps it).
	ownTagged := artifact(t, s, "app", "vex", gone.subject, false, oci.AccessoryTag(gone.subject, ".sbom"), "vex-latest")
	// So does a referrer with a tag of its own, which leaves the subject's referrers.
	ownReferrer := artifact(t, s, "app", "report", gone.subject, true, "report-latest")
	if err := s.DeleteManifest(ctx, "r", "app", gone.subject, nil); err != nil {
		t.Fatal(err)
	}
	gc := func() GCReport {
		t.Helper()
		r, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := gc(); r.Accessories != 0 {
		t.Errorf("the first collection after the delete removed %d accessories, want none before the grace", r.Accessories)
	}
	if m, tg := has(t, s, "app", gone.sig, gone.sigTag); !m || !tg {
		t.Fatal("the signature went before the grace")
	}
	clock.Add(int64(2 * time.Hour))
	if r := gc(); r.Accessories != 4 {
		t.Errorf("collection past the grace removed %d accessories, want 4 (the signature's tag and manifest, the referrer, the vex's accessory tag)", r.Accessories)
	}
	for what, d := range map[string]oci.Digest{"signature": gone.sig, "referrer": gone.referrer} {
		if m, _ := has(t, s, "app", d, ""); m {
			t.Errorf("the deleted image's %s is still there", what)
		}
	}
	if m, tg := has(t, s, "app", ownTagged, "vex-latest"); !m || !tg {
		t.Error("an accessory tagged by a tag of its own went")
	}
	if _, tg := has(t, s, "app", ownTagged, oci.AccessoryTag(gone.subject, ".sbom")); tg {
		t.Error("the accessory tag naming the deleted image stayed")
	}
	if m, tg := has(t, s, "app", ownReferrer, "report-latest"); !m || !tg {
		t.Error("a referrer tagged by a tag of its own went")
	}
	// The signature is gone now: its attestation follows a grace later.
	if m, _ := has(t, s, "app", gone.sigAtt, ""); !m {
		t.Error("the signature's attestation went in the same collection as the signature")
	}
	clock.Add(int64(2 * time.Hour))
	gc()
	clock.Add(int64(2 * time.Hour))
	gc()
	if m, _ := has(t, s, "app", gone.sigAtt, ""); m {
		t.Error("the signature's attestation is still there")
	}
	if n, noted, err := s.dropOrphanAccessories(ctx, 0, true); n+noted != 0 || err != nil {
		t.Errorf("after the collection, %d accessories still to delete and %d subjects to note (%v): what stays is no orphan", n, noted, err)
	}
	for _, d := range []oci.Digest{kept.subject, kept.sig, kept.sigAtt, kept.referrer} {
		if m, _ := has(t, s, "app", d, ""); !m {
			t.Errorf("the kept image lost %s", d)
		}
	}
	clean(t, s)
}

// A subject pushed back within the grace keeps its accessories; with
// delete_with_subject off, nothing goes; with no grace, everything goes in one run.
func TestAccessoriesOfASubjectBackOrKeptStay(t *testing.T) {
	ctx := context.Background()
	t.Run("pushed back", func(t *testing.T) {
		s, clock := clockedStore(t)
		im := pushSigned(t, s, "app", "x", "1.0.0")
		m, err := s.GetManifest(ctx, "r", "app", oci.Reference{Digest: im.subject})
		if err != nil {
			t.Fatal(err)
		}
		content := m.Content
		s.DeleteManifest(ctx, "r", "app", im.subject, nil)
		s.CollectGarbage(ctx, GCOptions{Grace: time.Hour}) // notes it gone
		putManifest(t, s, "r", "app", content, false, "1.0.0")
		clock.Add(int64(2 * time.Hour))
		r, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
		if err != nil || r.Accessories != 0 {
			t.Errorf("collection after the subject came back: %+v %v", r, err)
		}
		clock.Add(int64(2 * time.Hour))
		s.DeleteManifest(ctx, "r", "app", im.subject, nil)
		s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
		if r, _ := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour}); r.Accessories != 0 {
			t.Errorf("deleted again: %d accessories went at once (the note of its first absence was not cleared)", r.Accessories)
		}
		clean(t, s)
	})
	t.Run("delete_with_subject off", func(t *testing.T) {
		s, clock := clockedStore(t)
		s.SetAccessories(nil, false)
		im := pushSigned(t, s, "app", "x", "1.0.0")
		s.DeleteManifest(ctx, "r", "app", im.subject, nil)
		for range 3 {
			s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
			clock.Add(int64(2 * time.Hour))
		}
		if m, tg := has(t, s, "app", im.sig, im.sigTag); !m || !tg {
			t.Error("the signature went with delete_with_subject off")
		}
	})
	t.Run("no grace", func(t *testing.T) {
		s, _ := clockedStore(t)
		im := pushSigned(t, s, "app", "x", "1.0.0")
		s.DeleteManifest(ctx, "r", "app", im.subject, nil)
		r, err := s.CollectGarbage(ctx, GCOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []oci.Digest{im.sig, im.sigAtt, im.referrer} {
			if m, _ := has(t, s, "app", d, ""); m {
				t.Errorf("%s stayed (%+v)", d, r)
			}
		}
		clean(t, s)
	})
}

// An image and its accessories are evicted as one, when any of them was last used: a
// signature pulled recently keeps its image (cosign verify pulls both), and an image
// evicted takes its signature, attestation and referrers with it.
func TestEvictionTakesAnImageWithItsAccessories(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	a := pushSigned(t, s, "app", "a", "a")
	clock.Add(int64(time.Minute))
	b := pushSigned(t, s, "app", "b", "b")
	clock.Add(int64(9 * time.Minute))
	s.RecordPull("r", "app", string(a.sigTag), a.sig) // a's signature is in use
	if err := s.FlushAccess(); err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(5 * time.Minute))
	rep, err := s.EvictCache(ctx, "r", 0, 8*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []struct {
		name string
		im   signedImage
		kept bool
	}{{"a", a, true}, {"b", b, false}} {
		for what, d := range map[string]oci.Digest{"image": im.im.subject, "signature": im.im.sig, "attestation": im.im.sigAtt, "referrer": im.im.referrer} {
			if m, _ := has(t, s, "app", d, ""); m != im.kept {
				t.Errorf("%s's %s: present=%v after eviction, want %v", im.name, what, m, im.kept)
			}
		}
	}
	if rep.Manifests != 4 {
		t.Errorf("evicted %d manifests, want b's 4", rep.Manifests)
	}
	clean(t, s)
}
