package gateway

import "github.com/dockyard/dockyard/oci"

// Events hears of manifests pushed, deleted and pulled through the API (webhooks).
type Events interface {
	// Manifest is told of a push or delete once the index holds it and before the
	// client is answered: an error fails the request, so a client that saw its push
	// succeed never misses its event (and one that retries causes another). A pull is
	// told once its answer is ready; an error is logged.
	Manifest(e ManifestEvent) error
}

// The actions of manifest events.
const (
	EventPush   = "push"   // PUT, 201: once per tag the push set, or once untagged
	EventDelete = "delete" // DELETE, 202: of a tag, or of a manifest by digest
	EventPull   = "pull"   // GET, 200 with the manifest (not HEAD, not 304)
)

// ManifestEvent is what a request did to a manifest.
type ManifestEvent struct {
	Action string
	// Registry is the virtual registry the request was routed to (for a push through
	// a group, the group), Repository the repository in it.
	Registry, Repository string
	Tag                  string     // empty when the request named a digest (and set no tag)
	Digest               oci.Digest // empty for a delete by tag
	MediaType            string
	Size                 int64
	User                 string // empty: anonymous, or authentication is off
	RequestID            uint64 // as in the access log
}

// event tells Options.Events of one manifest event of request r (nil without Events).
func (g *Gateway) event(r *request, action string, tag oci.Tag, d oci.Digest, mediaType string, size int64) error {
	if g.opts.Events == nil {
		return nil
	}
	ae := accessOf(r.ctx)
	return g.opts.Events.Manifest(ManifestEvent{Action: action, Registry: r.reg.Name(), Repository: string(r.repo),
		Tag: string(tag), Digest: d, MediaType: mediaType, Size: size, User: ae.user, RequestID: ae.id})
}

// pushed tells of a push: one event per tag it set, or one untagged.
func (g *Gateway) pushed(r *request, res pushOutcome) error {
	if g.opts.Events == nil {
		return nil
	}
	tags := res.tags
	if len(tags) == 0 {
		tags = []oci.Tag{""}
	}
	for _, t := range tags {
		if err := g.event(r, EventPush, t, res.digest, res.mediaType, res.size); err != nil {
			return err
		}
	}
	return nil
}

// pushOutcome is what pushed needs of a manifest push.
type pushOutcome struct {
	digest    oci.Digest
	tags      []oci.Tag
	mediaType string
	size      int64
}
