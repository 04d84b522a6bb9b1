package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Layer is a layer with the history entry that says what it is.
type Layer struct {
	Layer     v1.Layer
	CreatedBy string
}

// Config is what an image says about itself.
type Config struct {
	Created     time.Time
	OS, Arch    string
	Entrypoint  []string
	Env         []string
	Labels      map[string]string // the image config's (docker inspect shows them)
	Annotations map[string]string // the manifest's
}

// Image assembles an OCI image (OCI media types throughout) from layers.
func Image(layers []Layer, c Config) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{
			Layer:     l.Layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: c.Created}, CreatedBy: l.CreatedBy},
		}
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: c.Created}
	cf.OS, cf.Architecture = c.OS, c.Arch
	cf.Config.Entrypoint = c.Entrypoint
	cf.Config.Env = c.Env
	cf.Config.Labels = c.Labels
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	if len(c.Annotations) > 0 {
		img = mutate.Annotations(img, c.Annotations).(v1.Image)
	}
	return img, nil
}

// The docker-style manifest.json entry (docker save's format since 1.10).
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// WriteArchive writes img, named ref, as one tar: an OCI image layout
// (oci-layout, index.json, blobs/sha256/...) plus a manifest.json naming
// the same blobs, which is what `docker save` writes since Docker 25.
// containerd (ctr, k3s, kind) reads the layout and names the image from
// io.containerd.image.name; podman reads it and names the image from
// org.opencontainers.image.ref.name, so that holds the whole reference, not
// only the tag; docker load reads manifest.json. Every entry has the same
// owner, mode and time, so equal images give equal archives.
func WriteArchive(w io.Writer, img v1.Image, ref string, epoch time.Time) error {
	tag, err := name.NewTag(ref, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	mdigest, err := img.Digest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cdigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}

	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Digest:    mdigest,
			Size:      int64(len(manifest)),
			Annotations: map[string]string{
				"io.containerd.image.name":          tag.Name(),
				"org.opencontainers.image.ref.name": tag.Name(),
			},
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}
	docker := []dockerManifest{{Config: blobPath(cdigest), RepoTags: []string{tag.Name()}}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		docker[0].Layers = append(docker[0].Layers, blobPath(d))
	}
	dockerJSON, err := json.Marshal(docker)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, size int64, r io.Reader) error {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, r, size); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	bytesFile := func(name string, b []byte) error { return file(name, int64(len(b)), bytes.NewReader(b)) }

	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		err = file(blobPath(d), size, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{blobPath(cdigest), config},
		{blobPath(mdigest), manifest},
		{"index.json", indexJSON},
		{"manifest.json", dockerJSON},
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	} {
		if err := bytesFile(f.name, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// ReadArchive unpacks an archive WriteArchive wrote (or any single-image OCI
// layout tar) into dir and returns its image and index annotations, read
// through the OCI layout, as containerd and podman read it.
func ReadArchive(archive, dir string) (v1.Image, map[string]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", archive, err)
		}
		target := filepath.Join(dir, cleanName(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, nil, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return nil, nil, err
			}
			out, err := os.Create(target)
			if err != nil {
				return nil, nil, err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, fmt.Errorf("%s: %s: unexpected entry type %q", archive, h.Name, h.Typeflag)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	if len(im.Manifests) != 1 {
		return nil, nil, fmt.Errorf("%s: %d manifests in index.json, want 1", archive, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, nil, err
	}
	return img, im.Manifests[0].Annotations, nil
}
