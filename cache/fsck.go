package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// CheckOptions tune Check.
type CheckOptions struct {
	Repair        bool // fix reference counts, drop entries that point at nothing
	VerifyDigests bool // re-hash every blob file
	// Alone, on a shared index, is the held context of Store.Alone: the repair is
	// written only while no instance can serve (confirmed right before).
	Alone context.Context
}

// CheckReport lists what Check found.
type CheckReport struct {
	Blobs, Manifests, Tags int
	Problems               []string
	Repaired               int
}

// Check verifies the index against itself and the blob files: every blob record has a
// file of its size (and digest), every link and tag points at something, every manifest
// has its content, and every reference count equals a recount. With Repair, counts are
// rewritten and dangling entries removed; orphan files are left to garbage collection.
func (s *Store) Check(ctx context.Context, opts CheckOptions) (CheckReport, error) {
	var rep CheckReport
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	var fixes []func(txn index.Txn) error
	var missing []oci.Digest // blobs whose records go, links and all
	var dropped [][]byte     // tag keys the repair deletes, for the tag cache

	blobRefs := map[oci.Digest]int64{}
	contentRefs := map[oci.Digest]int64{}
	blobs := map[oci.Digest]refRecord{}
	contents := map[oci.Digest]refRecord{}
	err := s.db.View(func(txn index.Txn) error {
		return txn.Scan(nil, nil, false, func(key, val []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			k, v := bytes.Clone(key), bytes.Clone(val)
			parts := strings.Split(string(k[1:]), "\x00")
			switch k[0] {
			case kindBlob:
				blobs[oci.Digest(parts[0])] = decodeRefRecord(v)
			case kindContentRefs:
				contents[oci.Digest(parts[0])] = decodeRefRecord(v)
			case kindContent:
				h, _, err := decodeContent(v)
				if err != nil {
					problem("manifest %s: unreadable content record: %v", parts[0], err)
					return nil
				}
				d := oci.Digest(parts[0])
				for _, b := range h.Blobs {
					if ok, _ := exists(txn, pendingKey(kindBlob, b, d)); !ok {
						blobRefs[b]++
					}
				}
				for _, c := range h.Children {
					if ok, _ := exists(txn, pendingKey(kindContentRefs, c, d)); !ok {
						contentRefs[c]++
					}
				}
			case kindRepoManifest:
				rep.Manifests++
				d := oci.Digest(parts[2])
				contentRefs[d]++
				if ok, _ := exists(txn, contentKey(d)); !ok {
					problem("manifest %s in %s/%s has no content", d, parts[0], parts[1])
					fixes = append(fixes, func(txn index.Txn) error { return txn.Delete(k) })
				}
			case kindTag:
				rep.Tags++
				d, _ := decodeTagValue(v)
				if ok, _ := exists(txn, repoManifestKey(parts[0], parts[1], d)); !ok {
					problem("tag %s/%s:%s points at %s, which the repository does not have", parts[0], parts[1], parts[2], d)
					reg, repo, tag := parts[0], parts[1], parts[2]
					fixes = append(fixes, func(txn index.Txn) error { return deleteTag(txn, reg, repo, tag, d) })
					dropped = append(dropped, k)
					return nil
				}
				if bk := tagByDigestKey(parts[0], parts[1], d, parts[2]); !mustExist(txn, bk) {
					problem("tag %s/%s:%s is missing from the index of %s's tags", parts[0], parts[1], parts[2], d)
					fixes = append(fixes, func(txn index.Txn) error { return txn.Set(bk, nil) })
				}
			case kindTagByDigest:
				v, found, _ := getValue(txn, tagKey(parts[0], parts[1], parts[3]))
				if d, _ := decodeTagValue(v); !found || string(d) != parts[2] {
					problem("the index of %s's tags lists %s/%s:%s, which points elsewhere", parts[2], parts[0], parts[1], parts[3])
					fixes = append(fixes, func(txn index.Txn) error { return txn.Delete(k) })
				}
			case kindLink:
				d := oci.Digest(parts[2])
				size, _ := binary.Varint(v)
				if ok, _ := exists(txn, blobKey(d)); !ok {
					problem("link %s/%s → %s has no blob record", parts[0], parts[1], d)
					reg, repo := parts[0], parts[1]
					fixes = append(fixes, func(txn index.Txn) error {
						if err := txn.Delete(k); err != nil {
							return err
						}
						return txn.Delete(linkByDigestKey(d, reg, repo))
					})
				}
				_ = size
			}
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	rep.Blobs = len(blobs)
	for d, r := range blobs {
		size, err := s.blobs.Stat(ctx, d)
		switch {
		case errors.Is(err, blobstore.ErrNotExist):
			problem("blob %s: the index has it, its file is missing", d)
			missing = append(missing, d)
			continue
		case err != nil:
			return rep, err
		case size != r.Size:
			problem("blob %s: file has %d bytes, the index says %d", d, size, r.Size)
		}
		if opts.VerifyDigests {
			if got, err := s.hashBlob(ctx, d); err != nil {
				return rep, err
			} else if got != d {
				problem("blob %s: file content hashes to %s", d, got)
			}
		}
		if want := blobRefs[d]; r.Refs != want {
			problem("blob %s: reference count %d, recount %d", d, r.Refs, want)
			fixes = append(fixes, s.setRefs(blobKey(d), r, want))
		}
	}
	for d, r := range contents {
		if want := contentRefs[d]; r.Refs != want {
			problem("manifest %s: reference count %d, recount %d", d, r.Refs, want)
			fixes = append(fixes, s.setRefs(contentRefsKey(d), r, want))
		}
	}
	if !opts.Repair {
		return rep, nil
	}
	if opts.Alone != nil && !s.Holds(opts.Alone) {
		return rep, errors.New("fsck: this index is no longer held alone (its lock connection was lost); nothing repaired, run the repair again")
	}
	// Many fixes share a transaction, as many as Badger takes.
	err = s.splitUpdate(false, 0, len(fixes), func(txn index.Txn, lo, hi int) error {
		for _, fix := range fixes[lo:hi] {
			if err := fix(txn); err != nil {
				return err
			}
		}
		return nil
	}, func(lo, hi int) { rep.Repaired += hi - lo })
	s.tags.invalidate(dropped...)
	if err != nil {
		return rep, err
	}
	for _, d := range missing {
		if err := s.dropRecordInChunks(d); err != nil {
			return rep, err
		}
		rep.Repaired++
	}
	return rep, nil
}

func mustExist(txn index.Txn, k []byte) bool {
	ok, _ := exists(txn, k)
	return ok
}

func (s *Store) setRefs(k []byte, r refRecord, refs int64) func(txn index.Txn) error {
	return func(txn index.Txn) error {
		r.Refs = refs
		r.ZeroSince = 0
		if refs == 0 {
			r.ZeroSince = s.now().UnixNano()
		}
		return txn.Set(k, r.encode())
	}
}

// dropRecordInChunks removes the record of blob d and its links, in as many
// transactions as its links need.
func (s *Store) dropRecordInChunks(d oci.Digest) error {
	for {
		done := false
		err := s.update(func(txn index.Txn) error {
			n, err := s.dropLinks(txn, d, linkChunk)
			if err != nil || n == linkChunk {
				return err
			}
			done = true
			return txn.Delete(blobKey(d))
		})
		if err != nil || done {
			return err
		}
	}
}

// dropBlobRecord removes a blob's record and links (its file is gone, or about to be).
func (s *Store) dropBlobRecord(txn index.Txn, d oci.Digest) error {
	if _, err := s.dropLinks(txn, d, -1); err != nil {
		return err
	}
	return txn.Delete(blobKey(d))
}

// dropLinks removes up to max (-1: all) links of blob d and returns how many it removed.
func (s *Store) dropLinks(txn index.Txn, d oci.Digest, max int) (int, error) {
	p := prefix(kindLinkByDigest, string(d))
	links, err := keysWithPrefix(txn, p)
	if err != nil {
		return 0, err
	}
	if max >= 0 && len(links) > max {
		links = links[:max]
	}
	for _, lk := range links {
		reg, repo, _ := strings.Cut(string(lk[len(p):]), "\x00")
		if err := txn.Delete(linkKey(reg, repo, d)); err != nil {
			return 0, err
		}
		if err := txn.Delete(lk); err != nil {
			return 0, err
		}
	}
	return len(links), nil
}

func (s *Store) hashBlob(ctx context.Context, d oci.Digest) (oci.Digest, error) {
	rc, _, err := s.blobs.Open(ctx, d)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := d.Algorithm().New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", err
	}
	return oci.FromHash(d.Algorithm(), h), nil
}
