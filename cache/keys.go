package cache

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// Index keys. Each begins with one byte naming the record kind; registry, repository
// and the rest are joined with 0, which no name, tag or digest contains, so a prefix
// scan never crosses from one repository into another.
const (
	kindBlob         = 'b' // b digest → blobRecord
	kindLink         = 'l' // l reg 0 repo 0 digest → size: the blob is served through repo
	kindContent      = 'c' // c digest → manifest bytes and what they reference (immutable)
	kindContentRefs  = 'C' // C digest → refRecord
	kindRepoManifest = 'm' // m reg 0 repo 0 digest → repoManifest
	kindTag          = 't' // t reg 0 repo 0 tag → tagValue
	kindReferrer     = 'r' // r reg 0 repo 0 subject 0 digest → descriptor
	kindRepo         = 'p' // p reg 0 repo → created-at
	kindUpload       = 'u' // u id → uploadRecord
	kindLinkByDigest = 'L' // L digest 0 reg 0 repo → (empty): the links of a blob, for GC
	kindTagByDigest  = 'T' // T reg 0 repo 0 digest 0 tag → (empty): the tags of a manifest
	kindTagAccess    = 'a' // a reg 0 repo 0 tag → Access (access.go)

	// References to content not stored yet (proxies and sparse indexes list layers and
	// children they do not have), counted once the content arrives. A layer reference
	// and a child-manifest reference are kept apart: one manifest may name the same
	// digest as both.
	kindPendingBlob     = 'P' // P digest 0 manifest → (empty): manifest lists blob digest
	kindPendingManifest = 'Q' // Q digest 0 manifest → (empty): index lists manifest digest
	// kindPendingMark is written by every new pending reference and read by the
	// transaction that creates the content's record: Badger detects conflicts on keys
	// read, not on ranges scanned, so without a key both touch, a pending reference
	// inserted after the record's scan would never be counted.
	kindPendingMark = 'N' // N kind digest → number of pending references (P or Q)

	kindMeta = 'V' // V name → index metadata (the format version)

	// The open upload sessions of each client, counted against
	// limits.upload_sessions_per_client on a shared index (on one instance the count is
	// kept in memory). Sessions older than this key have none: they go uncounted.
	kindClientUpload = 'O' // O client 0 id → (empty)

	// Also taken: 'k', 'R', 'J' and 'S' (records.go: CI tokens, revocations, jobs,
	// secrets) and 'E' (events.go: notification queues).
)

func key(kind byte, parts ...string) []byte {
	n := 1
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 1, n)
	k[0] = kind
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, p...)
	}
	return k
}

// prefix is key(kind, parts...) followed by the separator, for scanning children.
func prefix(kind byte, parts ...string) []byte {
	return append(key(kind, parts...), 0)
}

func blobKey(d oci.Digest) []byte        { return key(kindBlob, string(d)) }
func contentKey(d oci.Digest) []byte     { return key(kindContent, string(d)) }
func contentRefsKey(d oci.Digest) []byte { return key(kindContentRefs, string(d)) }
func uploadKey(id string) []byte         { return key(kindUpload, id) }

// sessionKeys are the keys of upload session u: its record, and its entry among its
// client's sessions.
func sessionKeys(u *Upload) [][]byte {
	if u.Client == "" {
		return [][]byte{uploadKey(u.ID)}
	}
	return [][]byte{uploadKey(u.ID), key(kindClientUpload, u.Client, u.ID)}
}
func repoKey(reg, repo string) []byte     { return key(kindRepo, reg, repo) }
func tagKey(reg, repo, tag string) []byte { return key(kindTag, reg, repo, tag) }
func linkKey(reg, repo string, d oci.Digest) []byte {
	return key(kindLink, reg, repo, string(d))
}
func repoManifestKey(reg, repo string, d oci.Digest) []byte {
	return key(kindRepoManifest, reg, repo, string(d))
}
func linkByDigestKey(d oci.Digest, reg, repo string) []byte {
	return key(kindLinkByDigest, string(d), reg, repo)
}
func tagByDigestKey(reg, repo string, d oci.Digest, tag string) []byte {
	return key(kindTagByDigest, reg, repo, string(d), tag)
}

// pendingKind is the pending-reference kind of a record kind (kindBlob or
// kindContentRefs).
func pendingKind(recordKind byte) byte {
	if recordKind == kindBlob {
		return kindPendingBlob
	}
	return kindPendingManifest
}

func pendingKey(recordKind byte, d, from oci.Digest) []byte {
	return key(pendingKind(recordKind), string(d), string(from))
}

func pendingMarkKey(recordKind byte, d oci.Digest) []byte {
	return key(kindPendingMark, string([]byte{pendingKind(recordKind)}), string(d))
}
func referrerKey(reg, repo string, subject, d oci.Digest) []byte {
	return key(kindReferrer, reg, repo, string(subject), string(d))
}

// refRecord counts the references to a blob or manifest: manifests that list it (and,
// for a manifest, repositories holding it). Repository links of a blob do not count:
// a blob no manifest needs is garbage once its grace period is over, which protects a
// layer uploaded just before its manifest. ZeroSince is when the count last was (or
// was refreshed at) zero, in unix nanoseconds; 0 while the count is positive.
type refRecord struct {
	Size      int64
	Refs      int64
	ZeroSince int64
}

func (r refRecord) encode() []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen64)
	b = binary.AppendVarint(b, r.Size)
	b = binary.AppendVarint(b, r.Refs)
	return binary.AppendVarint(b, r.ZeroSince)
}

func decodeRefRecord(b []byte) (r refRecord) {
	var n int
	r.Size, n = binary.Varint(b)
	b = b[n:]
	r.Refs, n = binary.Varint(b)
	b = b[n:]
	r.ZeroSince, _ = binary.Varint(b)
	return r
}

// tagValue is the digest and media type a tag points at (everything a manifest GET by
// tag needs besides the bytes, in one read) and when the tag was pushed.
func tagValue(d oci.Digest, mediaType string, pushedAt int64) []byte {
	return []byte(string(d) + "\x00" + mediaType + "\x00" + strconv.FormatInt(pushedAt, 10))
}

func decodeTagValue(b []byte) (oci.Digest, string) {
	d, rest, _ := strings.Cut(string(b), "\x00")
	mt, _, _ := strings.Cut(rest, "\x00")
	return oci.Digest(d), mt
}

// tagPushedAt is when the tag was last pushed (unix nanoseconds), 0 if unrecorded.
func tagPushedAt(b []byte) int64 {
	parts := strings.SplitN(string(b), "\x00", 3)
	if len(parts) < 3 {
		return 0
	}
	n, _ := strconv.ParseInt(parts[2], 10, 64)
	return n
}

// deleteKeys deletes each of keys.
func deleteKeys(txn index.Txn, keys [][]byte) error {
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
