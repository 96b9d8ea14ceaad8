package oci

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"strconv"
)

// Media types the registry understands as manifests.
const (
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerSchema1  = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSigned   = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// IsIndexType reports whether a media type lists other manifests.
func IsIndexType(mt string) bool { return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList }

// IsManifestType reports whether mt is a manifest media type this registry stores.
func IsManifestType(mt string) bool {
	switch mt {
	case MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList:
		return true
	}
	return false
}

// Descriptor points at content, as in the OCI image spec.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       Digest            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     json.RawMessage   `json:"platform,omitempty"`
	// Data is the content embedded in the descriptor: base64 in JSON, so that a
	// manifest whose data clients cannot decode is refused.
	Data []byte `json:"data,omitempty"`
}

// platform is what a descriptor's platform must read as (the image spec's fields).
type platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version"`
	OSFeatures   []string `json:"os.features"`
	Variant      string   `json:"variant"`
	Features     []string `json:"features"`
}

// Manifest is what the registry needs to know of a pushed manifest: the references
// it makes, its subject and the fields the referrers API reports.
type Manifest struct {
	MediaType    string
	ArtifactType string // the manifest's artifactType, or its config's media type
	Config       *Descriptor
	Layers       []Descriptor
	Children     []Descriptor // an index's manifests
	Subject      *Descriptor
	Annotations  map[string]string
}

// IsIndex reports whether the manifest lists other manifests.
func (m *Manifest) IsIndex() bool { return IsIndexType(m.MediaType) }

// RequiredBlobs lists the blobs that must exist before the manifest is accepted:
// the config and every layer that is not foreign (foreign layers carry URLs and are
// never pushed).
func (m *Manifest) RequiredBlobs() []Descriptor {
	var out []Descriptor
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	for _, l := range m.Layers {
		if len(l.URLs) == 0 {
			out = append(out, l)
		}
	}
	return out
}

type manifestDoc struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *Descriptor       `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// validate checks a descriptor decoded from a pushed manifest, whose digest has not
// been parsed yet.
func (d *Descriptor) validate(field string) (Descriptor, error) {
	if _, err := ParseDigest(string(d.Digest)); err != nil {
		return Descriptor{}, ErrManifestInvalid.Withf("%s: invalid digest %q", field, d.Digest)
	}
	if d.Size < 0 {
		return Descriptor{}, ErrManifestInvalid.Withf("%s: negative size", field)
	}
	if d.MediaType == "" {
		return Descriptor{}, ErrManifestInvalid.Withf("%s: mediaType is required", field)
	}
	if len(d.Platform) > 0 {
		if err := json.Unmarshal(d.Platform, &platform{}); err != nil {
			return Descriptor{}, ErrManifestInvalid.Withf("%s: platform: %v", field, err)
		}
	}
	return *d, nil
}

// ParseManifest validates a manifest pushed with the given Content-Type and returns
// what the registry must record about it. The bytes themselves are stored untouched.
func ParseManifest(contentType string, body []byte) (*Manifest, error) {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		contentType = mt // parameters on Content-Type are ignored
	}
	var doc manifestDoc
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil {
		return nil, ErrManifestInvalid.Withf("manifest is not valid JSON: %v", err)
	}
	// More() would miss a stray '}' or ']' after the object: only the end may follow.
	if _, err := dec.Token(); err != io.EOF {
		return nil, ErrManifestInvalid.Withf("manifest has data after its JSON object")
	}
	mediaType := doc.MediaType
	switch {
	case mediaType == "" && IsManifestType(contentType):
		mediaType = contentType
	case mediaType == "" && doc.Manifests != nil:
		mediaType = MediaTypeOCIIndex
	case mediaType == "":
		mediaType = MediaTypeOCIManifest
	case IsManifestType(contentType) && contentType != mediaType:
		return nil, ErrManifestInvalid.Withf("Content-Type %q does not match the manifest's mediaType %q", contentType, mediaType)
	}
	switch mediaType {
	case MediaTypeDockerSchema1, MediaTypeDockerSigned:
		return nil, ErrManifestInvalid.Withf("Docker schema 1 manifests are not supported; push schema 2 or OCI")
	}
	if !IsManifestType(mediaType) {
		return nil, ErrManifestInvalid.Withf("unsupported manifest media type %q", mediaType)
	}
	if doc.SchemaVersion == nil || *doc.SchemaVersion != 2 {
		return nil, ErrManifestInvalid.Withf("schemaVersion must be 2")
	}
	m := &Manifest{MediaType: mediaType, ArtifactType: doc.ArtifactType, Annotations: doc.Annotations}
	if IsIndexType(mediaType) {
		if doc.Config != nil || doc.Layers != nil {
			return nil, ErrManifestInvalid.Withf("an index has manifests, not config or layers")
		}
		for i := range doc.Manifests {
			d, err := doc.Manifests[i].validate("manifests[" + strconv.Itoa(i) + "]")
			if err != nil {
				return nil, err
			}
			m.Children = append(m.Children, d)
		}
	} else {
		if doc.Config == nil {
			return nil, ErrManifestInvalid.Withf("an image manifest needs a config descriptor")
		}
		if doc.Manifests != nil {
			return nil, ErrManifestInvalid.Withf("an image manifest has layers, not manifests")
		}
		c, err := doc.Config.validate("config")
		if err != nil {
			return nil, err
		}
		m.Config = &c
		for i := range doc.Layers {
			d, err := doc.Layers[i].validate("layers[" + strconv.Itoa(i) + "]")
			if err != nil {
				return nil, err
			}
			m.Layers = append(m.Layers, d)
		}
		if m.ArtifactType == "" {
			m.ArtifactType = c.MediaType
		}
	}
	if doc.Subject != nil {
		s, err := doc.Subject.validate("subject")
		if err != nil {
			return nil, err
		}
		m.Subject = &s
	}
	return m, nil
}
