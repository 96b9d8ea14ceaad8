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

// A deleted subject's referrers listed by its referrers-tag index (sha256-<subject>)
// go with that index: they were kept as "listed by an index" — the one going in the
// same transaction —, left the subject's referrers and leaked.
func TestReferrersListedByTheReferrersTagIndexGoWithIt(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	cfg := []byte(`{"image":"x"}`)
	layer := []byte("layer x")
	m := imageManifest(desc(mtConfig, putBlob(t, s, "r", "app", cfg), len(cfg)), desc(mtLayer, putBlob(t, s, "r", "app", layer), len(layer)))
	subject := putManifest(t, s, "r", "app", m, false, "1.0.0")
	ref := artifact(t, s, "app", "sbom", subject, true) // an OCI 1.1 referrer, untagged
	refContent, _ := s.GetManifest(ctx, "r", "app", oci.Reference{Digest: ref})
	idx := indexManifest(desc("application/vnd.oci.image.manifest.v1+json", ref, len(refContent.Content)))
	refTagIndex := putManifest(t, s, "r", "app", idx, false, oci.AccessoryTag(subject, ""))

	if err := s.DeleteManifest(ctx, "r", "app", subject, nil); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour}); err != nil {
			t.Fatal(err)
		}
		clock.Add(int64(2 * time.Hour))
	}
	if m, _ := has(t, s, "app", refTagIndex, ""); m {
		t.Errorf("referrers-tag index still there")
	}
	if m, _ := has(t, s, "app", ref, ""); m {
		t.Errorf("the deleted subject's referrer %s is still in the repository after 5 collections past the grace", ref)
	}
	clean(t, s)
}

// An index pushed between the collection's reading of the repository and its deleting
// transaction, listing an accessory manifest, keeps it (it was deleted under the index).
func TestAnAccessoryAnIndexListsSinceTheSnapshotStays(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	im := pushSigned(t, s, "app", "x", "1.0.0")
	if err := s.DeleteManifest(ctx, "r", "app", im.subject, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour}); err != nil { // notes the subject gone
		t.Fatal(err)
	}
	clock.Add(int64(2 * time.Hour))
	cutoff := s.now().Add(-time.Hour).UnixNano()
	set := s.accessorySettings()
	// What dropOrphanAccessories does, with a push landing between its reads and its
	// deleting transaction.
	o, err := s.findOrphans("r", "app", set.recognise)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.candidatesGraph("r", "app", o)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent push: a bundle index that lists the signature manifest, tagged.
	sigContent, _ := s.GetManifest(ctx, "r", "app", oci.Reference{Digest: im.sig})
	bundle := putManifest(t, s, "r", "app", indexManifest(desc("application/vnd.oci.image.manifest.v1+json", im.sig, len(sigContent.Content))), false, "bundle")
	if _, err := s.dropAccessoriesOf("r", "app", im.subject, o, g, set.recognise, cutoff, false); err != nil {
		t.Fatal(err)
	}
	if m, _ := has(t, s, "app", bundle, "bundle"); !m {
		t.Fatal("bundle gone")
	}
	if m, _ := has(t, s, "app", im.sig, ""); !m {
		t.Errorf("the signature manifest was deleted although the tagged index %s (pushed before the deleting transaction) lists it", bundle)
	}
}

// A subject pushed back clears the note that it was gone: deleted, noted, pushed back
// and deleted again between two collections, it kept the first note and lost its
// accessories 2 minutes after the second delete, with a 24 h grace.
func TestAPushBackClearsTheGoneNote(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	im := pushSigned(t, s, "app", "x", "1.0.0")
	m, _ := s.GetManifest(ctx, "r", "app", oci.Reference{Digest: im.subject})
	content := m.Content
	s.DeleteManifest(ctx, "r", "app", im.subject, nil)
	s.CollectGarbage(ctx, GCOptions{Grace: 24 * time.Hour}) // t0: noted gone
	clock.Add(int64(time.Hour))
	putManifest(t, s, "r", "app", content, false, "1.0.0") // back at t0+1h
	clock.Add(int64(22*time.Hour + 59*time.Minute))
	s.DeleteManifest(ctx, "r", "app", im.subject, nil) // deleted again at t0+23h59
	clock.Add(int64(2 * time.Minute))
	r, _ := s.CollectGarbage(ctx, GCOptions{Grace: 24 * time.Hour}) // t0+24h01: gone only 2 minutes
	if mm, _ := has(t, s, "app", im.sig, ""); !mm {
		t.Errorf("the signature went (%d accessories) 2 minutes after its subject's (second) delete, grace is 24h", r.Accessories)
	}
}
